// @ts-check
// /login#token=T: the token rides in the URL fragment, which browsers never send to a server.
// Post it for an HttpOnly session cookie, drop it from the address bar, open the dashboard.
import { logIn } from "./session.js";

const msg = /** @type {HTMLElement} */ (document.getElementById("msg"));
const token = new URLSearchParams(location.hash.slice(1)).get("token");
history.replaceState(null, "", location.pathname + location.search);

function safeNext() {
  const next = new URLSearchParams(location.search).get("next");
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

if (!token) {
  msg.textContent = "No token in this link: open the URL that `livestats up` printed, or log in on the dashboard.";
} else {
  const refused = await logIn(token);
  if (refused === null) {
    location.replace(safeNext());
  } else {
    msg.textContent = `Login refused: ${refused}`;
  }
}
