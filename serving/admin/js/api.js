// The JSON API client: every call of the page goes through api(). The admin token lives in
// sessionStorage (this tab only, gone when the tab closes) and is sent as the bearer header; it is
// never put in a URL and never in localStorage. logout() forgets it.
const KEY_TOKEN = "reranker.admin.token";
const KEY_NAME = "reranker.admin.name";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(KEY_TOKEN); },
  get name() { return sessionStorage.getItem(KEY_NAME) || ""; },
  get loggedIn() { return Boolean(sessionStorage.getItem(KEY_TOKEN)); },
  save(token, name) {
    sessionStorage.setItem(KEY_TOKEN, token);
    sessionStorage.setItem(KEY_NAME, name);
  },
  clear() {
    sessionStorage.removeItem(KEY_TOKEN);
    sessionStorage.removeItem(KEY_NAME);
  },
};

// Relative to the page (/admin): works behind a path prefix too.
function url(path, params) {
  const u = new URL(path.replace(/^\//, ""), document.baseURI);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null) u.searchParams.set(k, v);
  }
  return u;
}

async function errorOf(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}`;
}

// json: a body to send as JSON; form: a FormData (multipart); raw: return the Response itself.
export async function api(path, { method = "GET", params, json, form, raw = false, token } = {}) {
  const headers = {};
  const bearer = token ?? session.token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let resp;
  try {
    resp = await fetch(url(path, params), { method, headers, body, credentials: "omit", cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, `the service did not answer (${e.message})`);
  }
  if (!resp.ok) throw new ApiError(resp.status, await errorOf(resp));
  if (raw) return resp;
  return resp.status === 204 ? null : resp.json();
}

// 200 when the token is the admin token; throws ApiError (401/403) otherwise.
export function checkToken(token) {
  return api("/v1/admin/check", { token });
}
