// A domain's page: versions with metrics and gates, promote / rollback / delete (confirmed), the A/B
// split (editable), the A/B report as a chart with the verdict in words, its jobs and its labels.
import { api, ApiError, session } from "../api.js";
import { badge, confirmDialog, errorBox, fmt, h, replace, toast } from "../dom.js";
import { intervalChart, timelineChart } from "../charts.js";
import { versionsTable } from "./versions.js";
import { challengeAction, challengeSection } from "./challenge.js";

const REFRESH_MS = 10000;

function pp(x) { return `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)} pp`; }

export function verdictText(r) {
  const c = r.comparison;
  const t = r.thresholds;
  const b = r.arms.base;
  const d = r.arms.domain;
  const ci = c.ci95 ? `95% CI [${pp(c.ci95[0])}, ${pp(c.ci95[1])}]` : "";
  const figures = c.ctr_diff === null ? "" : `CTR domain − base ${pp(c.ctr_diff)} (${ci}, p = ${c.p_value.toPrecision(2)})`;
  switch (r.verdict) {
    case "insufficient data":
      return `Not enough data for a verdict yet: it needs at least ${t.min_impressions_per_arm} impressions in each ` +
        `arm and ${t.min_clicks} clicked ones in all (now: base ${b.impressions}, domain ${d.impressions} ` +
        `impressions; ${b.clicks + d.clicks} clicked).${figures ? ` So far: ${figures}.` : ""}`;
    case "no difference":
      return `No significant difference between the arms: ${figures}; p ≥ ${t.alpha}.`;
    case "domain better":
      return `The domain model is better: its results are clicked more often. ${figures}.`;
    case "base better":
      return `The base model is better: its results are clicked more often. ${figures}. Consider rolling back.`;
    default:
      return r.verdict;
  }
}

function armsTable(r) {
  const cell = (a, k, digits) => h("td", { class: "num" }, fmt.num(a[k], digits));
  const ci = (v) => (v ? `[${fmt.num(v[0])}, ${fmt.num(v[1])}]` : "–");
  return h("table", { class: "grid compact", id: "ab-arms" },
    h("thead", {}, h("tr", {}, ["arm", "impressions", "clicked", "CTR", "CTR 95%", "MRR", "MRR 95%",
      "latency mean ms", "p95 ms"].map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
    h("tbody", {}, Object.keys(r.arms).map((arm) => {
      const a = r.arms[arm];
      return h("tr", {}, h("td", {}, arm), h("td", { class: "num" }, fmt.int(a.impressions)),
        h("td", { class: "num" }, fmt.int(a.clicks)), cell(a, "ctr"), h("td", { class: "num" }, ci(a.ctr_ci95)),
        cell(a, "mrr"), h("td", { class: "num" }, ci(a.mrr_ci95)), cell(a, "latency_ms_mean", 1),
        cell(a, "latency_ms_p95", 1));
    })));
}

function jobsTable(jobs) {
  if (!jobs.length) return h("p", { class: "muted" }, "No training job yet.");
  return h("table", { class: "grid compact", id: "jobs" },
    h("thead", {}, h("tr", {}, ["job", "status", "stage", "started", "result"].map((t) => h("th", {}, t)))),
    h("tbody", {}, jobs.slice(0, 10).map((j) => h("tr", {},
      h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id)), h("td", {}, badge(j.status)), h("td", {}, j.stage),
      h("td", {}, fmt.time(j.created)), h("td", {}, j.version || j.error || "")))));
}

export async function domainView(domain) {
  const admin = session.loggedIn;
  const status = h("div", { id: "domain-status", role: "status" });
  const versionsBox = h("div");
  const abBox = h("div");
  const jobsBox = h("div");
  const labelsBox = h("div");
  const splitInput = h("input", { type: "number", id: "ab-split", min: 0, max: 100, step: 1, required: true,
    "aria-label": "share of traffic for the domain model, percent" });
  const splitForm = h("form", { class: "row", id: "ab-split-form" }, h("label", { for: "ab-split" }, "Domain model share"),
    splitInput, "%", h("button", { type: "submit", disabled: !admin }, "Save split"),
    admin ? null : h("span", { class: "muted" }, "log in to change it"));
  const verdict = h("p", { id: "ab-verdict", class: "verdict" });
  const ciCanvas = h("canvas", { id: "ab-chart", "aria-label": "CTR and MRR per arm with 95% intervals" });
  const tlCanvas = h("canvas", { id: "ab-timeline", "aria-label": "impressions per arm over the last day" });
  const armsBox = h("div");
  const rollback = h("button", { id: "rollback", class: "danger", hidden: true }, "Roll back");
  let info = null;
  const challenge = challengeSection(domain, { admin, act: (label, fn) => act(label, fn) });

  async function act(label, fn) {
    replace(status, "");
    try {
      const msg = await fn();
      toast(msg, "ok");
      replace(status, h("p", { class: "ok" }, msg));
    } catch (e) {
      const msg = `${label} failed: ${e.message}`;
      toast(msg, "error");
      replace(status, errorBox(msg));
    }
    await refresh();
  }

  const onPromote = async (v) => {
    if (!(await confirmDialog(`Promote ${domain}@${v}? It takes the domain arm's traffic within about a second.`,
      "Promote"))) return;
    await act("Promote", async () => {
      const r = await api(`/v1/domains/${domain}/promote`, { method: "POST", json: { version: v } });
      return `${r.model_id} is active`;
    });
  };
  const onDelete = async (v) => {
    if (!(await confirmDialog(`Delete ${domain}@${v}? Its files are removed; this cannot be undone.`, "Delete"))) return;
    await act("Delete", async () => {
      await api(`/v1/domains/${domain}/versions/${v}`, { method: "DELETE" });
      return `${domain}@${v} deleted`;
    });
  };
  rollback.addEventListener("click", async () => {
    if (!(await confirmDialog(`Roll ${domain} back from ${info.active} to the version active before it?`,
      "Roll back"))) return;
    await act("Rollback", async () => {
      const r = await api(`/v1/domains/${domain}/rollback`, { method: "POST" });
      return `rolled back: ${r.model_id} is active`;
    });
  });
  splitForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await act("Saving the split", async () => {
      const r = await api(`/v1/domains/${domain}`, { method: "PUT", json: { ab_split: Number(splitInput.value) / 100 } });
      return `A/B split saved: ${fmt.pct(r.ab_split, 0)} of traffic to the domain model`;
    });
  });

  async function refresh(first = false) {
    const [d, ab, tl, jobs, labels] = await Promise.allSettled([
      api(`/v1/domains/${domain}`), api(`/v1/domains/${domain}/ab`),
      api(`/v1/domains/${domain}/ab/timeline`, { params: { bucket_s: 3600 } }),
      api("/v1/jobs", { params: { domain } }), api(`/v1/domains/${domain}/labels/summary`)]);
    if (d.status === "fulfilled") {
      info = d.value;
      replace(versionsBox, versionsTable(info, { admin, onPromote, onDelete,
        onChallenge: (v) => challengeAction(domain, v, act) }));
      rollback.hidden = !(admin && info.active);
      if (first) splitInput.value = Math.round(100 * (info.ab_split ?? 0.5));
    } else if (d.reason instanceof ApiError && d.reason.status === 404) {
      info = { domain, active: null, versions: [] };
      replace(versionsBox, h("p", { class: "muted" }, "No model for this domain yet: requests are answered by the " +
        "base model. Train one from its logs, labels or uploaded data."));
      if (first) splitInput.value = 50;
    } else {
      replace(versionsBox, errorBox(`Could not load the versions: ${d.reason.message}`));
    }
    if (ab.status === "fulfilled") {
      replace(verdict, verdictText(ab.value));
      verdict.dataset.verdict = ab.value.verdict;
      intervalChart(ciCanvas, ab.value);
      replace(armsBox, armsTable(ab.value));
    } else {
      replace(verdict, errorBox(`Could not load the A/B report: ${ab.reason.message}`));
    }
    if (tl.status === "fulfilled") timelineChart(tlCanvas, tl.value);
    await challenge.refresh(first);
    replace(jobsBox, jobs.status === "fulfilled" ? jobsTable(jobs.value.jobs) : errorBox(jobs.reason.message));
    if (labels.status === "fulfilled") {
      const s = labels.value;
      replace(labelsBox, h("p", { id: "labels-summary" }, `${fmt.int(s.labels)} grades of ${fmt.int(s.pairs)} ` +
        `(query, passage) pairs over ${fmt.int(s.queries)} queries` +
        (Object.keys(s.labellers).length ? ` by ${Object.entries(s.labellers).map(([k, v]) => `${k} (${v})`).join(", ")}`
          : "") + "."));
    }
  }

  async function exportLabels() {
    try {
      const resp = await api(`/v1/domains/${domain}/labels/export`, { raw: true, params: { format: "csv" } });
      const link = h("a", { href: URL.createObjectURL(await resp.blob()), download: `${domain}-labels.csv` });
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    } catch (e) {
      toast(`Export failed: ${e.message}`, "error");
    }
  }

  const node = h("section", { class: "domain-page" },
    h("div", { class: "title-row" }, h("h1", {}, domain), h("span", { class: "spacer" }),
      h("a", { class: "button", href: `#/d/${domain}/train`, id: "go-train" }, "Train a model"),
      h("a", { class: "button", href: `#/d/${domain}/label`, id: "go-label" }, "Label queries"),
      rollback),
    status,
    h("h2", {}, "Versions"), versionsBox,
    h("h2", {}, "Champion vs challenger"), challenge.node,
    h("h2", {}, "A/B test"), splitForm, verdict,
    h("div", { class: "charts" },
      h("figure", {}, h("div", { class: "chart" }, ciCanvas), h("figcaption", {}, "CTR and MRR (first click) per arm, " +
        "bars: 95% intervals")),
      h("figure", {}, h("div", { class: "chart" }, tlCanvas), h("figcaption", {}, "Impressions per hour, last 24 h"))),
    armsBox,
    h("h2", {}, "Training jobs"), jobsBox,
    h("h2", {}, "Expert labels"), labelsBox,
    admin ? h("button", { class: "secondary", id: "export-labels", onclick: exportLabels }, "Export labels (CSV)") : null);
  await refresh(true);
  const timer = setInterval(() => refresh(), REFRESH_MS);
  return { node, dispose: () => clearInterval(timer) };
}
