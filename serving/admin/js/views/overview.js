// Domains overview: every domain of the registry or with logged traffic, its active version, status,
// A/B split, traffic in the last hour/day, and NDCG@10 of base vs the active version (its manifest).
import { api } from "../api.js";
import { badge, errorBox, fmt, h, replace } from "../dom.js";
import { evaluation } from "./versions.js";

const REFRESH_MS = 10000;

function row(name, info, traffic) {
  const active = info && info.active ? info.versions.find((v) => v.version === info.active) : null;
  const ev = active ? evaluation(active.manifest) : null;
  const failed = info ? info.versions.filter((v) => v.status === "failed").length : 0;
  const status = !info ? "no model" : active ? "active" : "base only";
  const split = info && info.active ? (info.ab_split ?? null) : null;
  const gain = ev && ev.base !== null && ev.candidate !== null ? ev.candidate - ev.base : null;
  return h("tr", { dataset: { domain: name } },
    h("td", {}, h("a", { href: `#/d/${name}` }, name)),
    h("td", {}, active ? active.version : "–"),
    h("td", {}, badge(status), failed ? h("span", { class: "muted" }, ` ${failed} failed`) : null),
    h("td", { class: "num" }, split === null ? (info && info.active ? "default" : "–") : fmt.pct(split, 0)),
    h("td", { class: "num" }, fmt.int(traffic ? traffic.last_hour : 0)),
    h("td", { class: "num" }, fmt.int(traffic ? traffic.last_day : 0)),
    h("td", { class: "num" }, ev ? fmt.num(ev.base) : "–"),
    h("td", { class: "num" }, ev ? fmt.num(ev.candidate) : "–"),
    h("td", { class: `num ${gain > 0 ? "good" : gain < 0 ? "bad" : ""}` },
      gain === null ? "–" : `${gain >= 0 ? "+" : ""}${gain.toFixed(3)}`));
}

async function load(body) {
  try {
    const [domains, traffic] = await Promise.all([api("/v1/domains"), api("/v1/traffic")]);
    const infos = new Map(domains.domains.map((d) => [d.domain, d]));
    const counts = new Map(traffic.domains.map((d) => [d.domain, d]));
    const names = [...new Set([...infos.keys(), ...counts.keys()])].sort();
    replace(body, names.length ? names.map((n) => row(n, infos.get(n), counts.get(n)))
      : h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No domain yet: open one below to train its first model.")));
    return null;
  } catch (e) {
    return e;
  }
}

export async function overviewView() {
  const body = h("tbody", { id: "domains-body" });
  const problem = h("div");
  const name = h("input", { id: "open-domain", placeholder: "new-domain", pattern: "[a-z0-9][a-z0-9_\\-]{0,63}",
    required: true, "aria-label": "domain id" });
  const open = h("form", { class: "row" }, name, h("button", { type: "submit" }, "Open domain"));
  open.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = `#/d/${name.value}`;
  });
  const node = h("section", {},
    h("h1", {}, "Domains"),
    h("table", { class: "grid", id: "domains" },
      h("thead", {}, h("tr", {},
        h("th", {}, "domain"), h("th", {}, "active"), h("th", {}, "status"), h("th", { class: "num" }, "A/B to domain"),
        h("th", { class: "num" }, "requests 1 h"), h("th", { class: "num" }, "requests 24 h"),
        h("th", { class: "num" }, "NDCG@10 base"), h("th", { class: "num" }, "NDCG@10 active"),
        h("th", { class: "num" }, "gain"))),
      body),
    problem,
    h("p", { class: "muted" }, "NDCG@10 from the active version's held-out evaluation (same candidates for base " +
      "and model). Traffic counts every rerank logged for the domain."),
    h("h2", {}, "Open or start a domain"), open);
  const first = await load(body);
  if (first) replace(problem, errorBox(`Could not load the domains: ${first.message}`));
  const timer = setInterval(async () => {
    const e = await load(body);
    replace(problem, e ? errorBox(`Could not refresh: ${e.message}`) : "");
  }, REFRESH_MS);
  return { node, dispose: () => clearInterval(timer) };
}
