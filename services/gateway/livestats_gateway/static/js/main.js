// @ts-check
// The app shell: who is logged in (else a login form), then the page the path names.
import { el } from "./format.js";
import { CloseCode } from "./protocol.js";
import { showRuns } from "./runs.js";
import { showRun } from "./run.js";
import { logIn } from "./session.js";
import { showCompare } from "./compare.js";

const view = /** @type {HTMLElement} */ (document.getElementById("view"));
const banner = /** @type {HTMLElement} */ (document.querySelector("[data-testid=conn-banner]"));
const connState = /** @type {HTMLElement} */ (document.querySelector("[data-testid=conn-state]"));

/** Connection state for the header and the banner; pages call it through their sockets. */
export function showConnection(state, detail = {}) {
  connState.textContent = state;
  connState.dataset.state = state;
  if (state === "reconnecting") {
    const wait = detail.delayMs !== undefined ? ` in ${(detail.delayMs / 1000).toFixed(1)} s` : "";
    banner.textContent = `Reconnecting… (attempt ${detail.attempt ?? 1}${wait}; the page resumes where it left off)`;
    banner.hidden = false;
  } else if (state === "closed" && detail.code === CloseCode.UNAUTHORIZED) {
    banner.textContent = "Your session ended (token revoked or expired). Log in again.";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

function loginForm(message) {
  const input = el("input", { type: "password", "data-testid": "token-input", placeholder: "lsk_…", autocomplete: "off", required: true });
  const note = el("p", { class: "muted", text: message ?? "Paste an API token (livestats token create NAME), or open the link `make run` printed." });
  const form = el("form", {}, input, el("button", { type: "submit", "data-testid": "login-button", text: "Log in" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const refused = await logIn(input.value.trim());
    if (refused === null) {
      location.reload();
    } else {
      note.textContent = `Login refused: ${refused}`;
      note.className = "error";
    }
  });
  view.replaceChildren(el("section", { class: "login" }, el("h1", { text: "Log in" }), note, form));
}

async function main() {
  const answer = await fetch("/api/session", { headers: { Accept: "application/json" } });
  if (answer.status === 401) {
    connState.textContent = "closed";
    loginForm();
    return;
  }
  if (!answer.ok) {
    view.replaceChildren(el("p", { class: "error", text: `The gateway answered ${answer.status}; reload to try again.` }));
    return;
  }
  const me = await answer.json();
  /** @type {HTMLElement} */ (document.querySelector("[data-testid=whoami]")).textContent = me.principal;
  const logout = /** @type {HTMLElement} */ (document.getElementById("logout"));
  logout.hidden = false;
  logout.addEventListener("click", async () => {
    await fetch("/api/session", { method: "DELETE" });
    location.assign("/");
  });
  const match = location.pathname.match(/^\/runs\/([^/]+)$/);
  if (location.pathname === "/") showRuns(view, me, showConnection);
  else if (location.pathname === "/compare") showCompare(view, showConnection);
  else if (match) showRun(view, decodeURIComponent(match[1]), me, showConnection);
  else view.replaceChildren(el("p", { class: "error", "data-testid": "run-error", text: "Page not found." }));
}

main().catch((err) => {
  console.error("livestats: the page failed to start", err);
  view.replaceChildren(el("p", { class: "error", text: `The page failed to start: ${err}` }));
});
