// @ts-check
// Small, pure formatting helpers shared by the pages.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP, a style attribute is not
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

/** 75 -> "1m 15s"; null -> "—". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(rest).padStart(2, "0")}s`;
  return `${rest}s`;
}

export function clockTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

/** Elapsed seconds of a run, on the worker's monotonic clock as its heartbeats report it, moved
 * on by the time since the last heartbeat (so this and the heartbeat's figures never disagree);
 * the wall-clock span from its start only before the first heartbeat. */
export function runElapsed(snap, nowMs) {
  const ended = snap.finished_ts !== null && snap.finished_ts !== undefined;
  if (ended) return snap.elapsed_s ?? (snap.started_ts ? (snap.finished_ts - snap.started_ts) / 1000 : null);
  if (snap.heartbeat_ts && snap.elapsed_s !== null && snap.elapsed_s !== undefined) {
    return snap.elapsed_s + Math.max(0, nowMs - snap.heartbeat_ts) / 1000;
  }
  return snap.started_ts ? Math.max(0, nowMs - snap.started_ts) / 1000 : null;
}

/** Seconds left before the run's deadline, by the same clock as `runElapsed`. */
export function runRemaining(snap, nowMs) {
  if (snap.heartbeat_ts && snap.remaining_s !== null && snap.remaining_s !== undefined) {
    return Math.max(0, snap.remaining_s - Math.max(0, nowMs - snap.heartbeat_ts) / 1000);
  }
  return snap.deadline_ts ? Math.max(0, (snap.deadline_ts - nowMs) / 1000) : null;
}

export function percent(done, planned) {
  return planned > 0 ? Math.min(100, (100 * done) / planned) : 0;
}

/** Who a run belongs to, the same words on every page: a run without an owner was submitted by
 * an operator tool (the CLI on Redis, `make run`), which only admins see. */
export function ownerLabel(owner) {
  return owner ?? "operator";
}

/** "2026-12-01 04:35:12" in the reader's time zone; null -> "—". */
export function dateTime(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Why a run is where it is, in one line: the outcome's reason and detail once it ended. */
export function outcomeText(snap) {
  if (snap.status === "queued") return "waiting for a worker";
  if (!snap.outcome && !snap.reason) return snap.status === "running" ? "in progress" : "";
  return [snap.reason, snap.detail].filter(Boolean).join(": ");
}
