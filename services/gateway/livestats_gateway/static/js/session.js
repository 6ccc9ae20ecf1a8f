// @ts-check
// The browser session: a token exchanged for an HttpOnly cookie (POST /api/session), the one
// place the pages do it.

/**
 * POST /api/session. `replace`: end a session of another token this browser holds (else 409).
 * @param {string} token
 * @param {boolean} replace
 * @returns {Promise<Response>}
 */
export function postSession(token, replace) {
  return fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token, replace }),
  });
}

/**
 * Log in with an API token.
 * @param {string} token
 * @returns {Promise<string | null>} null when the cookie is set, else why the gateway refused.
 */
export async function logIn(token) {
  const answer = await postSession(token, false);
  if (answer.ok) return null;
  const body = await answer.json().catch(() => ({ detail: answer.statusText }));
  return String(body.detail);
}
