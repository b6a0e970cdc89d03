// Login: the admin token (checked against GET /v1/admin/check) and the name recorded on labels.
import { ApiError, checkToken, session } from "../api.js";
import { h, replace } from "../dom.js";
import { header } from "../header.js";

export function loginView() {
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const token = h("input", { type: "password", id: "login-token", name: "token", required: true,
    autocomplete: "current-password" });
  const name = h("input", { type: "text", id: "login-name", name: "name", required: true, maxlength: 100,
    autocomplete: "name", value: session.name });
  const submit = h("button", { type: "submit" }, "Log in");
  const form = h("form", { class: "card narrow", id: "login-form" },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "The admin token is the service's RERANKER_ADMIN_TOKEN. It stays in this tab " +
      "(sessionStorage) until you log out or close the tab, and is sent only as the Authorization header."),
    h("label", { for: "login-token" }, "Admin token"), token,
    h("label", { for: "login-name" }, "Your name (recorded with every label you grade)"), name,
    h("div", { class: "row" }, submit, h("a", { href: "#/" }, "Continue read-only")),
    error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      await checkToken(token.value.trim());
      session.save(token.value.trim(), name.value.trim());
      header();
      location.hash = "#/";
    } catch (e) {
      const why = e instanceof ApiError && e.status === 401 ? "Wrong admin token: the service refused it."
        : e instanceof ApiError && e.status === 403 ? `Admin actions are disabled on this service: ${e.message}`
          : `Could not log in: ${e.message}`;
      replace(error, why);
      error.hidden = false;
      token.select();
    } finally {
      submit.disabled = false;
    }
  });
  return { node: form };
}
