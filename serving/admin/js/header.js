// The top bar's login state.
import { session } from "./api.js";
import { replace } from "./dom.js";

export function header() {
  const loggedIn = session.loggedIn;
  document.getElementById("login-link").hidden = loggedIn;
  document.getElementById("logout").hidden = !loggedIn;
  replace(document.getElementById("who"), loggedIn ? `admin: ${session.name}` : "read-only (not logged in)");
}
