// The admin page: a hash router over views that call the JSON API (api.js).
//   #/                 domains overview          #/d/<domain>        domain page
//   #/d/<domain>/train train form                #/jobs/<id>         a job's live progress
//   #/d/<domain>/label label queue               #/login             login form
import { session } from "./api.js";
import { h, replace } from "./dom.js";
import { header } from "./header.js";
import { loginView } from "./views/login.js";
import { overviewView } from "./views/overview.js";
import { domainView } from "./views/domain.js";
import { trainView, jobView } from "./views/train.js";
import { labelView } from "./views/label.js";

const ROUTES = [
  [/^\/$/, () => overviewView()],
  [/^\/login$/, () => loginView()],
  [/^\/d\/([a-z0-9][a-z0-9_-]{0,63})$/, (d) => domainView(d)],
  [/^\/d\/([a-z0-9][a-z0-9_-]{0,63})\/train$/, (d) => trainView(d)],
  [/^\/d\/([a-z0-9][a-z0-9_-]{0,63})\/label$/, (d) => labelView(d)],
  [/^\/jobs\/([a-z0-9][a-z0-9-]{0,63})$/, (id) => jobView(id)],
];

let current = null; // the live view: {node, dispose()}; dispose stops its timers and key handlers
let routeSeq = 0; // a view that finishes loading after the user moved on is thrown away

function crumbs(path) {
  const nav = document.getElementById("crumbs");
  const m = path.match(/^\/d\/([^/]+)(?:\/(train|label))?$/);
  const parts = [];
  if (m) {
    parts.push(h("a", { href: `#/d/${m[1]}` }, m[1]));
    if (m[2]) parts.push(h("span", {}, m[2]));
  } else if (path.startsWith("/jobs/")) {
    parts.push(h("span", {}, "job"));
  }
  replace(nav, parts.flatMap((p, i) => (i ? [" / ", p] : [p])));
}

async function route() {
  const path = (location.hash || "#/").slice(1) || "/";
  if (current && current.dispose) current.dispose();
  current = null;
  header();
  crumbs(path);
  const main = document.getElementById("main");
  for (const [re, view] of ROUTES) {
    const m = path.match(re);
    if (m) {
      const seq = ++routeSeq;
      replace(main, h("p", { class: "muted" }, "Loading…"));
      const v = await view(...m.slice(1).map(decodeURIComponent));
      if (seq !== routeSeq) {
        if (v && v.dispose) v.dispose();
        return;
      }
      current = v;
      replace(main, v.node);
      return;
    }
  }
  replace(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the domains")));
}

document.getElementById("logout").addEventListener("click", () => {
  session.clear();
  header();
  location.hash = "#/";
  route();
});
window.addEventListener("hashchange", route);
route();
