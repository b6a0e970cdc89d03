// Label: the expert queue. One logged query at a time with the passages that were shown for it;
// keys: 1-5 grade the focused passage (and move on), arrows up/down move, Enter saves this query's
// grades and opens the next, arrows left/right go to the previous/next query without saving.
import { api, session } from "../api.js";
import { errorBox, fmt, h, replace, toast } from "../dom.js";

const GRADES = [1, 2, 3, 4, 5];
const GRADE_WORDS = { 1: "not relevant", 2: "barely", 3: "partly", 4: "relevant", 5: "perfect" };

export async function labelView(domain) {
  if (!session.loggedIn) {
    return { node: h("section", {}, h("h1", {}, `Label ${domain}`),
      h("p", { class: "error", role: "alert" }, "Grading needs the admin token. ", h("a", { href: "#/login" }, "Log in"), ".")) };
  }
  let order = "frequent";
  let items = [];
  let at = 0; // index of the query on screen
  let focus = 0; // index of the focused passage
  let grades = new Map(); // passage_id -> grade, for the query on screen
  const card = h("div", { id: "label-card", class: "card" });
  const status = h("div", { id: "label-status", role: "status" });
  const counts = h("p", { id: "label-counts", class: "muted" });

  async function loadCounts() {
    try {
      const s = await api(`/v1/domains/${domain}/labels/summary`);
      replace(counts, `${fmt.int(s.labels)} grades stored for ${domain} (${fmt.int(s.pairs)} pairs, ${fmt.int(s.queries)} ` +
        `queries); yours: ${fmt.int(s.labellers[session.name] || 0)}.`);
    } catch (e) {
      replace(counts, errorBox(e.message));
    }
  }

  async function loadQueue() {
    try {
      const q = await api(`/v1/domains/${domain}/labels/queue`, { params: { order, limit: 50, passages: 10 } });
      items = q.items;
      at = 0;
      show();
    } catch (e) {
      replace(card, errorBox(`Could not load the queue: ${e.message}`));
    }
  }

  function show() {
    focus = 0;
    const item = items[at];
    grades = new Map();
    if (!item) {
      replace(card, h("p", { id: "queue-empty" }, "Nothing left to grade for this domain. New queries appear as traffic is logged."));
      return;
    }
    for (const p of item.passages) {
      if (p.labels[session.name]) grades.set(p.passage_id, p.labels[session.name]);
    }
    draw();
  }

  function draw() {
    const item = items[at];
    replace(card,
      h("p", { class: "muted" }, `Query ${at + 1} of ${items.length} · asked ${item.impressions}× · last ${fmt.ago(item.last_seen)}` +
        (item.margin === null ? "" : ` · top-2 score gap ${item.margin.toFixed(3)}`)),
      h("h2", { id: "label-query" }, item.query),
      h("ol", { class: "passages", id: "passages" }, item.passages.map((p, i) => {
        const g = grades.get(p.passage_id);
        const others = Object.entries(p.labels).filter(([who]) => who !== session.name);
        return h("li", { class: `passage${i === focus ? " focused" : ""}`, dataset: { index: i, grade: g || "" },
          "aria-current": i === focus ? "true" : null },
        h("div", { class: "grades", role: "group", "aria-label": `grade passage ${i + 1}` }, GRADES.map((n) =>
          h("button", { type: "button", class: `grade${g === n ? " chosen" : ""}`, "aria-pressed": g === n ? "true" : "false",
            title: GRADE_WORDS[n], onclick: () => { focus = i; grade(n); } }, String(n)))),
        h("p", { class: "passage-text" }, p.text),
        h("p", { class: "muted small-text" }, `shown at rank ${p.position + 1}, score ${p.score.toFixed(3)}` +
          (p.doc_id ? ` · ${p.doc_id}` : "") +
          (others.length ? ` · graded by ${others.map(([who, v]) => `${who}: ${v}`).join(", ")}` : "")));
      })),
      h("div", { class: "row" },
        h("button", { type: "button", id: "save-grades", onclick: save }, "Save and next (Enter)"),
        h("button", { type: "button", class: "secondary", onclick: () => move(1) }, "Skip (→)"),
        h("span", { class: "muted" }, `${grades.size} of ${item.passages.length} graded`)));
    const el = card.querySelector(".passage.focused");
    if (el) el.scrollIntoView({ block: "nearest" });
  }

  function grade(n) {
    const item = items[at];
    if (!item) return;
    grades.set(item.passages[focus].passage_id, n);
    focus = Math.min(item.passages.length - 1, focus + 1);
    draw();
  }

  function move(step) {
    if (!items.length) return;
    at = Math.max(0, Math.min(items.length, at + step));
    replace(status, "");
    show();
  }

  let saving = false; // a second Enter while the first save is in flight must not skip a query
  async function save() {
    const item = items[at];
    if (!item || saving) return;
    if (!grades.size) {
      replace(status, errorBox("Grade at least one passage (keys 1-5) before saving."));
      return;
    }
    const labels = [...grades].map(([passage_id, relevance]) => ({ passage_id, relevance }));
    saving = true;
    try {
      const r = await api(`/v1/domains/${domain}/labels`, { method: "POST",
        json: { query: item.query, labels, labeller: session.name } });
      toast(`Saved ${r.stored} grades`, "ok");
      replace(status, h("p", { class: "ok" }, `Saved ${r.stored} grades for “${item.query}”.`));
      items.splice(at, 1);
      if (at >= items.length) await loadQueue();
      else show();
      await loadCounts();
    } catch (e) {
      replace(status, errorBox(`Could not save: ${e.message}`));
    } finally {
      saving = false;
    }
  }

  function onKey(ev) {
    const tag = (ev.target && ev.target.tagName) || "";
    if (["INPUT", "SELECT", "TEXTAREA"].includes(tag) || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const item = items[at];
    if (/^[1-5]$/.test(ev.key)) grade(Number(ev.key));
    else if (ev.key === "ArrowDown" && item) { focus = Math.min(item.passages.length - 1, focus + 1); draw(); }
    else if (ev.key === "ArrowUp" && item) { focus = Math.max(0, focus - 1); draw(); }
    else if (ev.key === "ArrowRight") move(1);
    else if (ev.key === "ArrowLeft") move(-1);
    else if (ev.key === "Enter") save();
    else return;
    ev.preventDefault();
  }
  document.addEventListener("keydown", onKey);

  const orderSel = h("select", { id: "label-order" },
    h("option", { value: "frequent" }, "most frequent first"), h("option", { value: "uncertain" }, "most uncertain first"));
  orderSel.addEventListener("change", () => { order = orderSel.value; loadQueue(); });
  const node = h("section", { class: "label-page" },
    h("div", { class: "title-row" }, h("h1", {}, `Label ${domain}`), h("span", { class: "spacer" }),
      h("label", { for: "label-order" }, "Order "), orderSel),
    h("p", { class: "keys" }, h("kbd", {}, "1"), "–", h("kbd", {}, "5"), " grade the highlighted passage · ",
      h("kbd", {}, "↑"), h("kbd", {}, "↓"), " move · ", h("kbd", {}, "Enter"), " save and next · ",
      h("kbd", {}, "←"), h("kbd", {}, "→"), " previous/next query · grading as ", h("strong", {}, session.name)),
    counts, status, card);
  await Promise.all([loadQueue(), loadCounts()]);
  return { node, dispose: () => document.removeEventListener("keydown", onKey) };
}
