// The domain page's champion/challenger part: the running test (what the decision rule says now,
// decide / end buttons), the autopilot switch with its triggers and the global kill switch, and the
// timeline (trained, gated, challenged, decided: by whom or by the autopilot).
import { api, session } from "../api.js";
import { badge, errorBox, fmt, h, replace } from "../dom.js";

function sign(x, digits = 3) { return x === null || x === undefined ? "–" : `${x >= 0 ? "+" : ""}${x.toFixed(digits)}`; }

function testBox(cur) {
  if (!cur) return h("p", { class: "muted", id: "test-none" }, "No challenger under test: the active version " +
    "(champion) and the base share the traffic. Put a candidate version under test with its Challenge button.");
  const arms = cur.stats.arms || {};
  const m = cur.stats.metrics || {};
  const row = (name) => {
    const a = arms[name] || {};
    return h("tr", {}, h("td", {}, name === "champion" ? `champion ${cur.champion}` : `challenger ${cur.challenger}`),
      h("td", { class: "num" }, fmt.int(a.impressions)), h("td", { class: "num" }, fmt.num(a.ctr)),
      h("td", { class: "num" }, fmt.num(a.mrr)), h("td", { class: "num" }, fmt.num(a.latency_ms_p95, 1)),
      h("td", { class: "num" }, fmt.pct(a.error_rate, 2)));
  };
  const seq = (k) => (m[k] && m[k].cs ? `${k.toUpperCase()} ${sign(m[k].diff, 4)} [${sign(m[k].cs[0], 4)}, ` +
    `${sign(m[k].cs[1], 4)}], p = ${m[k].p_value.toPrecision(2)}` : null);
  return h("div", { id: "test-box" },
    h("p", { class: "verdict", dataset: { verdict: cur.outcome } }, h("strong", {}, `Rule says: ${cur.outcome}. `),
      cur.reasons.join("; "), ` (since ${fmt.time(cur.since)})`),
    h("table", { class: "grid compact", id: "test-arms" },
      h("thead", {}, h("tr", {}, ["arm", "impressions", "CTR", "MRR", "p95 ms", "errors"].map((t, i) =>
        h("th", { class: i ? "num" : "" }, t)))),
      h("tbody", {}, row("champion"), row("challenger"))),
    h("p", { class: "muted small-text" }, ["ctr", "mrr"].map(seq).filter(Boolean).join(" · ") ||
      "always-valid intervals appear once both arms reached the minimum exposure"));
}

function timelineList(events) {
  if (!events.length) return h("p", { class: "muted" }, "Nothing happened to this domain's models yet.");
  return h("table", { class: "grid compact", id: "timeline" },
    h("thead", {}, h("tr", {}, ["when", "what", "by", "model", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, events.slice(0, 30).map((e) => h("tr", { dataset: { kind: e.kind, actor: e.actor } },
      h("td", { class: "nowrap" }, fmt.time(e.ts)), h("td", {}, badge(e.kind)),
      h("td", {}, e.actor === "autopilot" ? h("strong", {}, "autopilot") : e.actor), h("td", {}, e.model || ""),
      h("td", { class: "small-text" }, e.summary)))));
}

// act(label, fn): the domain page's action runner (status line, toast, refresh).
export function challengeSection(domain, { admin, act }) {
  const testDiv = h("div");
  const buttons = h("div", { class: "row" });
  const timelineDiv = h("div");
  const pilotDiv = h("div");
  const enabled = h("input", { type: "checkbox", id: "autopilot-enabled", disabled: !admin });
  const clicks = h("input", { type: "number", id: "autopilot-clicks", min: 1, step: 1, disabled: !admin });
  const labels = h("input", { type: "number", id: "autopilot-labels", min: 1, step: 1, disabled: !admin });
  const kill = h("button", { type: "button", id: "kill-switch", class: "danger", disabled: !admin });
  let killed = false;
  const form = h("form", { class: "row", id: "autopilot-form" },
    h("label", { for: "autopilot-enabled" }, enabled, " Autopilot for this domain"),
    h("label", { for: "autopilot-clicks" }, "retrain after"), clicks, "new clicked queries or", labels,
    h("label", { for: "autopilot-labels" }, "new expert labels"),
    h("button", { type: "submit", disabled: !admin }, "Save autopilot"), kill,
    admin ? null : h("span", { class: "muted" }, "log in to change it"));

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act("Saving the autopilot", async () => {
      const r = await api(`/v1/domains/${domain}/autopilot`, { method: "PUT", json: {
        enabled: enabled.checked, min_clicked_queries: Number(clicks.value), min_expert_labels: Number(labels.value) } });
      return `autopilot ${r.enabled ? "on" : "off"} for ${domain}`;
    });
  });
  kill.addEventListener("click", () => act("The kill switch", async () => {
    const r = await api("/v1/autopilot/kill", { method: "PUT", json: { killed: !killed } });
    return r.killed ? "kill switch on: no automatic action anywhere" : "kill switch off: automatic actions resume";
  }));

  async function refresh(first) {
    const [dec, tl, pilot, all] = await Promise.allSettled([api(`/v1/domains/${domain}/decisions`),
      api(`/v1/domains/${domain}/timeline`), api(`/v1/domains/${domain}/autopilot`), api("/v1/autopilot")]);
    if (dec.status === "fulfilled") {
      const cur = dec.value.current;
      replace(testDiv, testBox(cur));
      replace(buttons, admin && cur ? [
        h("button", { type: "button", id: "decide-now", onclick: () => act("Deciding", async () => {
          const r = await api(`/v1/domains/${domain}/decide`, { method: "POST", json: { by: session.name || "admin" } });
          return r.decision ? `decided: ${r.outcome}` : `no decision yet: ${r.reasons.join("; ")}`;
        }) }, "Decide now"),
        h("button", { type: "button", class: "secondary", id: "end-test", onclick: () => act("Ending the test",
          async () => {
            await api(`/v1/domains/${domain}/challenger`, { method: "DELETE", params: { by: session.name || "admin" } });
            return "test ended";
          }) },
        "End the test")] : []);
    } else if (dec.reason.status !== 404) {
      replace(testDiv, errorBox(`Could not load the test: ${dec.reason.message}`));
    } else {
      replace(testDiv, testBox(null));
    }
    if (tl.status === "fulfilled") replace(timelineDiv, timelineList(tl.value.events));
    if (pilot.status === "fulfilled" && first) {
      enabled.checked = pilot.value.enabled;
      clicks.value = pilot.value.min_clicked_queries;
      labels.value = pilot.value.min_expert_labels;
    }
    if (all.status === "fulfilled") {
      killed = all.value.killed;
      kill.textContent = killed ? "Kill switch is ON: release it" : "Kill switch (stop all automatic actions)";
      replace(pilotDiv, h("p", { id: "autopilot-state", class: killed || all.value.spill_backlog ? "error" : "muted" },
        killed ? "The kill switch is on: nothing happens automatically." : all.value.spill_backlog
          ? "Impressions are spilling: automatic actions wait until they are replayed."
          : all.value.interval_s ? `Decisions and autopilot rounds run every ${all.value.interval_s} s.`
            : "The timer is off: decisions and autopilot rounds run on request only."));
    }
  }

  const node = h("div", { id: "challenge" }, testDiv, buttons,
    h("h2", {}, "Autopilot"), form, pilotDiv,
    h("h2", {}, "Timeline"), timelineDiv);
  return { node, refresh };
}

// A version's Challenge button (the versions table calls it for candidate and retired versions).
export function challengeAction(domain, version, act) {
  return act("Challenge", async () => {
    const r = await api(`/v1/domains/${domain}/challenger`, { method: "POST", json: { version,
      by: session.name || "admin" } });
    return `${domain}@${r.challenger} is the challenger`;
  });
}
