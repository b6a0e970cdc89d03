// Train: the form that starts a job (sources + options with their defaults), the uploads of the
// domain's data, and a job's live progress (stage, steps, loss curve, dev metrics, gates, cancel).
import { api, session } from "../api.js";
import { badge, confirmDialog, errorBox, fmt, h, replace, toast } from "../dom.js";
import { lossChart } from "../charts.js";
import { gateList } from "./versions.js";

const STAGES = ["load", "negatives", "train", "evaluate", "export", "gates", "publish", "done"];
const TERMINAL = ["succeeded", "failed", "cancelled"];
const POLL_MS = 1500;
const KIND_NAMES = { ragas: "RAGAS JSONL", labels: "labels CSV/JSONL", beir: "BEIR zip" };
// The options most runs touch come first; the rest follow in TrainConfig's order.
const MAIN_OPTIONS = ["epochs", "batch_size", "learning_rate", "max_length", "max_queries", "negatives_per_query",
  "min_gain"];

function loginFirst(what) {
  return h("section", {}, h("h1", {}, what),
    h("p", { class: "error", role: "alert" }, "This needs the admin token. ", h("a", { href: "#/login" }, "Log in"), "."));
}

// The range an option takes, from the options schema the server checks a train request against.
function optionRange(prop) {
  const p = (prop && prop.anyOf ? prop.anyOf.find((b) => b.type !== "null") : prop) || {};
  const lo = p.exclusiveMinimum !== undefined ? `> ${p.exclusiveMinimum}` : p.minimum !== undefined ? `>= ${p.minimum}` : "";
  const hi = p.exclusiveMaximum !== undefined ? `< ${p.exclusiveMaximum}` : p.maximum !== undefined ? `<= ${p.maximum}` : "";
  return [lo, hi].filter(Boolean).join(", ");
}

function optionInput(name, def, prop) {
  const id = `opt-${name}`;
  const shown = def === null ? "none" : Array.isArray(def) ? JSON.stringify(def) : String(def);
  let input;
  if (typeof def === "boolean") {
    input = h("select", { id, name }, h("option", { value: "" }, `default (${shown})`),
      h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
  } else {
    input = h("input", { id, name, type: "text", inputmode: typeof def === "number" ? "decimal" : "text",
      placeholder: shown, dataset: { kind: Array.isArray(def) ? "json" : typeof def } });
  }
  return h("div", { class: "option" }, h("label", { for: id }, name), input,
    h("span", { class: "muted small-text" }, `default: ${shown}` + (optionRange(prop) ? `; ${optionRange(prop)}` : "")));
}

// Only the options the user filled in are sent; numbers and JSON are parsed, text passes as is.
function readOptions(box) {
  const out = {};
  for (const el of box.querySelectorAll("input, select")) {
    const v = el.value.trim();
    if (!v) continue;
    if (el.tagName === "SELECT") out[el.name] = v === "true";
    else if (el.dataset.kind === "number" || el.dataset.kind === "object") {
      const n = Number(v);
      if (Number.isNaN(n)) throw new Error(`${el.name}: ${v} is not a number`);
      out[el.name] = n;
    } else if (el.dataset.kind === "json") out[el.name] = JSON.parse(v);
    else out[el.name] = v;
  }
  return out;
}

function uploadRow(u) {
  const stats = u.kind === "beir" ? Object.entries(u.stats.splits || {}).map(([s, x]) => `${s}: ${x.queries} queries`).join(", ")
    : `${u.stats.pairs ?? "?"} pairs`;
  return h("label", { class: "check" },
    h("input", { type: "checkbox", name: "upload", value: u.id, dataset: { kind: u.kind } }),
    ` ${u.filename} `, h("span", { class: "muted" }, `${KIND_NAMES[u.kind]}, ${fmt.bytes(u.size)}, ${stats}, ${fmt.ago(u.created)}`));
}

export async function trainView(domain) {
  if (!session.loggedIn) return { node: loginFirst(`Train a model for ${domain}`) };
  const [options, uploads, labels, traffic] = await Promise.allSettled([
    api("/v1/training/options"), api(`/v1/domains/${domain}/uploads`),
    api(`/v1/domains/${domain}/labels/summary`), api("/v1/traffic")]);
  const defaults = options.status === "fulfilled" ? options.value.defaults : {};
  const schema = options.status === "fulfilled" ? options.value.json_schema.properties : {};
  const logged = traffic.status === "fulfilled" ? traffic.value.domains.find((d) => d.domain === domain) : null;
  const nLabels = labels.status === "fulfilled" ? labels.value.pairs : 0;

  const uploadList = h("div", { id: "uploads" });
  const showUploads = (list) => replace(uploadList, list.length ? list.map(uploadRow)
    : h("p", { class: "muted" }, "No uploaded file yet."));
  showUploads(uploads.status === "fulfilled" ? uploads.value.uploads : []);

  // upload form: its own request (multipart), then the new file is listed and ticked
  const upKind = h("select", { id: "upload-kind", name: "kind" },
    Object.entries(KIND_NAMES).map(([k, v]) => h("option", { value: k }, v)));
  const upFile = h("input", { type: "file", id: "upload-file", name: "file", required: true,
    accept: ".jsonl,.json,.ndjson,.csv,.zip" });
  const upStatus = h("div", { id: "upload-status", role: "status" });
  const upForm = h("form", { class: "row", id: "upload-form" }, upKind, upFile, h("button", { type: "submit" }, "Upload"));
  upForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData();
    form.append("kind", upKind.value);
    form.append("file", upFile.files[0]);
    replace(upStatus, h("p", { class: "muted" }, "Uploading and checking…"));
    try {
      const u = await api(`/v1/domains/${domain}/uploads`, { method: "POST", form });
      const list = await api(`/v1/domains/${domain}/uploads`);
      showUploads(list.uploads);
      const box = uploadList.querySelector(`input[value="${u.id}"]`);
      if (box) box.checked = true;
      replace(upStatus, h("p", { class: "ok" }, `${u.filename} accepted`));
      upFile.value = "";
    } catch (e) {
      replace(upStatus, errorBox(`Upload refused: ${e.message}`));
    }
  });

  const searchLogs = h("input", { type: "checkbox", id: "src-search-logs", checked: Boolean(logged && logged.total) });
  const expert = h("input", { type: "checkbox", id: "src-expert-labels", checked: nLabels > 0 });
  const beir = h("input", { type: "text", id: "src-beir", placeholder: "/data/my-beir-dir (on the server)" });
  const split = h("input", { type: "text", id: "src-beir-split", value: "train" });
  const activate = h("input", { type: "checkbox", id: "opt-activate" });
  const optionBox = h("div", { class: "options", id: "options" },
    [...MAIN_OPTIONS.filter((k) => k in defaults), ...Object.keys(defaults).filter((k) => !MAIN_OPTIONS.includes(k))]
      .map((k) => optionInput(k, defaults[k], schema[k])));
  const formStatus = h("div", { id: "train-status", role: "status" });
  const submit = h("button", { type: "submit", id: "start-training" }, "Start training");
  const form = h("form", { id: "train-form" },
    h("fieldset", {}, h("legend", {}, "Sources"),
      h("label", { class: "check" }, searchLogs, " Search logs of the domain ",
        h("span", { class: "muted" }, `(${fmt.int(logged ? logged.total : 0)} impressions logged; clicked ones count)`)),
      h("label", { class: "check" }, expert, " Expert labels ",
        h("span", { class: "muted" }, `(${fmt.int(nLabels)} graded pairs; `, h("a", { href: `#/d/${domain}/label` }, "label more"), ")")),
      h("p", {}, "Uploaded files (tick to use):"), uploadList,
      h("details", {}, h("summary", {}, "A BEIR directory on the server"),
        h("div", { class: "row" }, h("label", { for: "src-beir" }, "directory"), beir,
          h("label", { for: "src-beir-split" }, "split"), split))),
    h("fieldset", {}, h("legend", {}, "Options (empty = default)"), optionBox,
      h("label", { class: "check" }, activate, " Activate the new version when every gate passes")),
    h("div", { class: "row" }, submit), formStatus);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    replace(formStatus, "");
    let body;
    try {
      const config = readOptions(optionBox);
      const maxQueries = config.max_queries;
      delete config.max_queries;
      body = {
        search_logs: searchLogs.checked, expert_labels: expert.checked, activate: activate.checked, config,
        uploads: [...uploadList.querySelectorAll("input[name=upload]:checked")].map((el) => el.value),
      };
      if (maxQueries) body.max_queries = maxQueries;
      if (beir.value.trim()) Object.assign(body, { beir: beir.value.trim(), split: split.value.trim() || "train" });
    } catch (e) {
      replace(formStatus, errorBox(`Options: ${e.message}`));
      return;
    }
    submit.disabled = true;
    try {
      const r = await api(`/v1/domains/${domain}/train/reranker`, { method: "POST", json: body });
      location.hash = `#/jobs/${r.job_id}`;
    } catch (e) {
      replace(formStatus, errorBox(`Could not start the job: ${e.message}`));
    } finally {
      submit.disabled = false;
    }
  });

  const node = h("section", {}, h("h1", {}, `Train a model for ${domain}`),
    options.status === "rejected" ? errorBox(`Could not load the training options: ${options.reason.message}`) : null,
    h("h2", {}, "Upload training data"),
    h("p", { class: "muted" }, "RAGAS JSONL (question/user_input, contexts, ground_truth or reference_contexts), " +
      "expert labels CSV/JSONL (query, document, relevance 1-5), or a BEIR zip (corpus.jsonl, queries.jsonl, " +
      "qrels/<split>.tsv). Each file is read by the training code before it is kept; a bad one is refused with " +
      "its file:line."),
    upForm, upStatus,
    h("h2", {}, "Start a job"), form);
  return { node };
}

function metricsTable(metrics) {
  const systems = ["bm25", "base", "candidate"].filter((s) => metrics[s]);
  if (!systems.length) return h("p", { class: "muted" }, "Dev metrics appear when the job evaluates.");
  const keys = Object.keys(metrics[systems[0]]);
  return h("table", { class: "grid compact", id: "job-metrics" },
    h("thead", {}, h("tr", {}, h("th", {}, "system"), keys.map((k) => h("th", { class: "num" }, k)))),
    h("tbody", {}, systems.map((s) => h("tr", {}, h("td", {}, s),
      keys.map((k) => h("td", { class: "num" }, fmt.num(metrics[s][k])))))));
}

// What each source contributed ("pairs 5 · queries 1 · relevance 1:1 2:1 ..."), one row per source.
function sourcesTable(sources) {
  const names = Object.keys(sources || {});
  if (!names.length) return h("p", { class: "muted" }, "Sources are read in the load stage.");
  const figure = (v) => (v && typeof v === "object"
    ? Object.entries(v).map(([k, x]) => `${k}:${typeof x === "object" ? JSON.stringify(x) : x}`).join(" ") : String(v));
  return h("table", { class: "grid compact", id: "job-sources" },
    h("thead", {}, h("tr", {}, h("th", {}, "source"), h("th", {}, "what it gave"))),
    h("tbody", {}, names.map((n) => h("tr", { dataset: { source: n } }, h("td", {}, n),
      h("td", {}, Object.entries(sources[n]).map(([k, v]) => `${k} ${figure(v)}`).join(" · "))))));
}

function stageList(job) {
  const at = STAGES.indexOf(job.stage);
  return h("ol", { class: "stages" }, STAGES.map((s, i) => h("li", {
    class: s === job.stage ? (TERMINAL.includes(job.status) && job.status !== "succeeded" ? "stage-failed" : "stage-now")
      : at > i || job.status === "succeeded" ? "stage-done" : "",
  }, s)));
}

export async function jobView(jobId) {
  const head = h("div");
  const progress = h("div", { id: "job-progress" });
  const lossCanvas = h("canvas", { id: "loss-chart", "aria-label": "training loss per step" });
  const lossNote = h("p", { class: "muted" });
  const metricsBox = h("div");
  const gatesBox = h("div", { id: "job-gates" });
  const sourcesBox = h("div");
  const cancel = h("button", { id: "cancel-job", class: "danger", hidden: true }, "Cancel job");
  let timer = null;
  let disposed = false;
  let lastLossLen = -1;

  cancel.addEventListener("click", async () => {
    if (!(await confirmDialog(`Cancel ${jobId}? The run stops at its next step; nothing is published.`, "Cancel job"))) return;
    try {
      await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
      toast("Cancel requested", "ok");
    } catch (e) {
      toast(`Cancel failed: ${e.message}`, "error");
    }
  });

  function render(job) {
    const done = TERMINAL.includes(job.status);
    replace(head, h("div", { class: "title-row" }, h("h1", {}, `Training ${job.domain}`), badge(job.status),
      h("span", { class: "spacer" }), cancel),
    h("p", { class: "muted" }, `${job.id} · started ${fmt.time(job.created)}` +
      (job.finished ? ` · finished ${fmt.time(job.finished)} (${Math.round(job.finished - job.created)} s)` : "")),
    job.status === "succeeded" && job.version
      ? h("p", { class: "ok", id: "job-result" }, "Published ", h("a", { href: `#/d/${job.domain}` }, job.version), ".")
      : null,
    job.error ? h("p", { class: "error", role: "alert", id: "job-error" }, job.error) : null);
    cancel.hidden = done || !session.loggedIn;
    const p = job.progress;
    replace(progress, stageList(job), done ? null
      : h("p", {}, `Stage ${job.stage}: `, p.total ? `${p.done} / ${p.total}` : "…", " ",
        h("progress", { max: p.total || 1, value: p.total ? p.done : 0 })));
    if (job.loss.length !== lastLossLen) {
      lastLossLen = job.loss.length;
      if (job.loss.length) lossChart(lossCanvas, job.loss);
      replace(lossNote, job.loss.length ? `last loss ${job.loss[job.loss.length - 1].loss.toFixed(4)} at step ` +
        `${job.loss[job.loss.length - 1].step}` : "The loss curve appears while the model trains.");
    }
    replace(metricsBox, metricsTable(job.metrics || {}));
    replace(gatesBox, job.gates.length ? gateList(job.gates) : h("p", { class: "muted" }, "Gates are checked after evaluation and export."));
    replace(sourcesBox, sourcesTable(job.sources));
    return done;
  }

  async function poll() {
    try {
      const job = await api(`/v1/jobs/${jobId}`);
      if (render(job)) return;
    } catch (e) {
      replace(head, errorBox(`Could not load the job: ${e.message}`));
    }
    if (!disposed) timer = setTimeout(poll, POLL_MS);
  }

  const node = h("section", { class: "job-page", id: "job" }, head, progress,
    h("div", { class: "charts" }, h("figure", {}, h("div", { class: "chart" }, lossCanvas), h("figcaption", {}, lossNote))),
    h("h2", {}, "Dev metrics (held-out queries)"), metricsBox,
    h("h2", {}, "Gates"), gatesBox,
    h("h2", {}, "Sources"), sourcesBox);
  await poll();
  return { node, dispose: () => { disposed = true; clearTimeout(timer); } };
}
