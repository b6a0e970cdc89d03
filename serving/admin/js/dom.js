// Small DOM helpers. Text always goes in as text nodes (never as HTML): queries and passages come
// from users' traffic. No inline styles or handlers: the page's CSP forbids them.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const fmt = {
  num(v, digits = 3) { return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits); },
  pct(v, digits = 1) { return v === null || v === undefined ? "–" : `${(100 * v).toFixed(digits)}%`; },
  int(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en"); },
  bytes(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  },
  time(ts) {
    return ts ? new Date(ts * 1000).toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit",
      minute: "2-digit", hour12: false }) : "–";
  },
  ago(ts) {
    if (!ts) return "–";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 129600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  },
};

export function badge(status) {
  return h("span", { class: `badge badge-${status.replace(/\s+/g, "-")}` }, status);
}

let toastTimer;
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `toast toast-${kind} shown`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = "toast"; }, kind === "error" ? 8000 : 3500);
}

// A modal confirmation (<dialog>); resolves true when confirmed.
export function confirmDialog(question, confirmLabel = "Confirm") {
  const dlg = document.getElementById("confirm");
  replace(dlg.querySelector(".confirm-text"), question);
  const ok = dlg.querySelector(".confirm-ok");
  ok.textContent = confirmLabel;
  return new Promise((resolve) => {
    const done = (value) => {
      ok.removeEventListener("click", onOk);
      dlg.removeEventListener("close", onClose);
      if (dlg.open) dlg.close();
      resolve(value);
    };
    const onOk = () => done(true);
    const onClose = () => done(false);
    ok.addEventListener("click", onOk);
    dlg.addEventListener("close", onClose);
    dlg.showModal();
  });
}

// A message block for a failed load or action.
export function errorBox(message) {
  return h("p", { class: "error", role: "alert" }, message);
}
