// @ts-check
// /login?next=/path#token=T: the token rides in the URL fragment, which browsers never send to a
// server. Post it for a session (an HttpOnly cookie holding an opaque session id), drop it from
// the address bar, open `next` (on this origin only) or the dashboard.
// A login link never silently replaces a session of another token: the server answers 409 and
// this page shows who is logged in and asks (switch / stay).
import { postSession } from "./session.js";

const msg = /** @type {HTMLElement} */ (document.getElementById("msg"));
const choice = /** @type {HTMLElement} */ (document.getElementById("choice"));
const token = new URLSearchParams(location.hash.slice(1)).get("token");
history.replaceState(null, "", location.pathname + location.search);

// Only an absolute path on this origin: no scheme, no `//` or `\` (browsers read `/\host` as
// `//host`), no control characters, in the value or any percent-decoding of it (`/%5Chost`,
// `%2F%2Fhost`). Anything else opens the dashboard.
/** @param {string | null} raw @param {string} origin */
export function safeNext(raw, origin) {
  if (!raw) return "/";
  let value = raw;
  for (let round = 0; round < 4; round += 1) {
    if (!value.startsWith("/") || value.startsWith("//") || /[\\\u0000-\u001f\u007f]/.test(value)) return "/";
    let decoded;
    try {
      decoded = decodeURIComponent(value);
    } catch {
      return "/"; // malformed percent-encoding
    }
    if (decoded === value) break;
    value = decoded;
  }
  const url = new URL(raw, origin);
  return url.origin === origin ? url.pathname + url.search + url.hash : "/";
}

/** @param {boolean} replace */
async function post(replace) {
  return postSession(/** @type {string} */ (token), replace);
}

function openNext() {
  location.replace(safeNext(new URLSearchParams(location.search).get("next"), location.origin));
}

/** @param {Response} answer */
async function refused(answer) {
  const body = await answer.json().catch(() => ({ detail: answer.statusText }));
  msg.textContent = `Login refused: ${typeof body.detail === "string" ? body.detail : answer.statusText}`;
}

function ask(conflict) {
  const current = conflict.current.principal;
  const offered = conflict.offered.principal;
  const other = current === offered ? `${offered} (with another token)` : offered;
  msg.textContent = `This browser is logged in as ${current}. This link logs in as ${other}.`;
  const switchButton = /** @type {HTMLElement} */ (document.getElementById("switch"));
  const stayButton = /** @type {HTMLElement} */ (document.getElementById("stay"));
  switchButton.textContent = `Switch to ${other}`;
  stayButton.textContent = `Stay logged in as ${current}`;
  choice.hidden = false;
  return new Promise((/** @type {(v: boolean) => void} */ resolve) => {
    switchButton.addEventListener("click", () => resolve(true), { once: true });
    stayButton.addEventListener("click", () => resolve(false), { once: true });
  });
}

async function logIn() {
  let answer = await post(false);
  if (answer.status === 409) {
    if (!(await ask(await answer.json()))) {
      openNext();
      return;
    }
    choice.hidden = true;
    answer = await post(true);
  }
  if (answer.ok) openNext();
  else await refused(answer);
}

if (!token) {
  msg.textContent = "No token in this link: open the URL that `livestats up` printed, or log in on the dashboard.";
} else {
  await logIn();
}
