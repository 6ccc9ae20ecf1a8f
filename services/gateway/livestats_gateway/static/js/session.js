// @ts-check
// The browser session: a token exchanged for an HttpOnly cookie (POST /api/session), the one
// place the pages do it.

/**
 * Log in with an API token.
 * @param {string} token
 * @returns {Promise<string | null>} null when the cookie is set, else why the gateway refused.
 */
export async function logIn(token) {
  const answer = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (answer.ok) return null;
  const body = await answer.json().catch(() => ({ detail: answer.statusText }));
  return String(body.detail);
}
