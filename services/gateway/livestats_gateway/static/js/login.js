// /login#token=T: the token rides in the URL fragment, which browsers never send to a server.
// Post it for an HttpOnly session cookie, drop it from the address bar, open the dashboard.
const msg = document.getElementById("msg");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
history.replaceState(null, "", location.pathname + location.search);

function safeNext() {
  const next = new URLSearchParams(location.search).get("next");
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

if (!token) {
  msg.textContent = "No token in this link: open the URL that `livestats up` printed, or log in on the dashboard.";
} else {
  const answer = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (answer.ok) {
    location.replace(safeNext());
  } else {
    const body = await answer.json().catch(() => ({ detail: answer.statusText }));
    msg.textContent = `Login refused: ${body.detail}`;
  }
}
