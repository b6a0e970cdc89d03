// A domain's versions as a table: metrics from the manifest's held-out evaluation, ms/pair, size,
// gates with their figures, and the promote / delete buttons (callbacks given by the domain page).
import { badge, fmt, h } from "../dom.js";

export function evaluation(manifest) {
  const ev = (manifest || {}).evaluation;
  if (!ev || !ev.candidate) return null;
  return { base: ev.base ? ev.base["ndcg@10"] : null, candidate: ev.candidate["ndcg@10"], all: ev };
}

const OPS = { ">=": "≥", "<=": "≤" };
const GATE_FORMAT = {
  quality: ["NDCG@10", (v) => fmt.num(v)],
  parity: ["parity (Spearman)", (v) => fmt.num(v)],
  latency_ms_per_pair: ["ms/pair", (v) => fmt.num(v, 1)],
  size_bytes: ["size", (v) => fmt.bytes(v)],
};

// "NDCG@10 0.660 ≥ 0.610": the gate's figure against its threshold.
export function gateText(g) {
  const [name, f] = GATE_FORMAT[g.gate] || [g.gate, (v) => (typeof v === "number" ? String(+v.toFixed(4)) : String(v))];
  const value = g.value === null || g.value === undefined ? "–" : f(g.value);
  return `${name} ${value} ${OPS[g.op] || g.op} ${f(g.threshold)}`;
}

export function gateList(gates) {
  return h("ul", { class: "gates" }, (gates || []).map((g) =>
    h("li", { class: g.passed ? "pass" : "fail", title: g.error || "" },
      h("span", { class: "mark" }, g.passed ? "pass" : "FAIL"), " ", gateText(g))));
}

function metric(m, key) {
  return m && m.candidate && m.candidate[key] !== undefined ? fmt.num(m.candidate[key]) : "–";
}

export function versionsTable(info, { admin, onPromote, onDelete, onChallenge }) {
  const rows = [...info.versions].reverse().map((v) => {
    const man = v.manifest || {};
    const ev = man.evaluation;
    const actions = [];
    if (admin && v.status !== "active" && v.status !== "failed") {
      actions.push(h("button", { class: "small", dataset: { action: "promote", version: v.version },
        onclick: () => onPromote(v.version) }, "Promote"));
    }
    if (admin && onChallenge && info.active && !info.challenger && ["candidate", "retired"].includes(v.status)) {
      actions.push(h("button", { class: "small", dataset: { action: "challenge", version: v.version },
        onclick: () => onChallenge(v.version) }, "Challenge"));
    }
    if (admin && v.status !== "active") {
      actions.push(h("button", { class: "small danger", dataset: { action: "delete", version: v.version },
        onclick: () => onDelete(v.version) }, "Delete"));
    }
    return h("tr", { dataset: { version: v.version, status: v.status } },
      h("td", {}, h("strong", {}, v.version), h("div", { class: "muted small-text" }, man.kind || "")),
      h("td", {}, badge(v.status), v.error ? h("div", { class: "error small-text" }, v.error) : null),
      h("td", { class: "actions" }, actions),
      h("td", { class: "nowrap" }, fmt.time(man.created)),
      h("td", { class: "num" }, metric(ev, "ndcg@5")),
      h("td", { class: "num" }, metric(ev, "ndcg@10")),
      h("td", { class: "num" }, metric(ev, "mrr@10")),
      h("td", { class: "num" }, metric(ev, "context_precision@5")),
      h("td", { class: "num" }, ev && ev.base ? fmt.num(ev.base["ndcg@10"]) : "–"),
      h("td", { class: "num" }, man.ms_per_pair_256 !== undefined ? fmt.num(man.ms_per_pair_256, 1) : "–"),
      h("td", { class: "num nowrap" }, fmt.bytes(man.size_bytes)),
      h("td", {}, man.gates ? gateList(man.gates) : h("span", { class: "muted" }, "pushed, not trained here")));
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "versions" },
    h("thead", {}, h("tr", {},
      ["version", "status", "", "created"].map((t) => h("th", {}, t)),
      ["NDCG@5", "NDCG@10", "MRR@10", "context precision@5", "base NDCG@10", "ms/pair", "size"]
        .map((t) => h("th", { class: "num" }, t)),
      h("th", {}, "gates"))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 12, class: "muted" }, "No version yet.")))));
}
