// @ts-check
// The run page: `/ws/runs/{id}` sends `hello` (the snapshot at join), the history, `live`, then
// live events. Counters are the snapshot plus the events after its `seq`; the log and the charts
// take every event once, by stream id. A reconnect resumes with `since` = the last id taken, so
// after any number of drops the numbers are exactly the stream's.
import { Charts } from "./charts.js";
import { LiveSocket, clock } from "./conn.js";
import { EventLog } from "./eventlog.js";
import { applyEvent, emptySnapshot, isTerminal } from "./fold.js";
import { CloseCode } from "./protocol.js";
import { duration, el, percent, runElapsed, runRemaining } from "./format.js";

const COUNTERS = [
  ["attempts_started", "attempts", ""], ["successful_calls", "succeeded", "ok"], ["failed_attempts", "failed attempts", "fail"],
  ["retries", "retries", "retry"], ["in_flight", "in flight", ""], ["calls_done", "calls done", ""], ["planned_calls", "calls planned", ""],
];
const FRESH_GREEN_S = 5;
const FRESH_YELLOW_S = 30;
const RETRIES_SHOWN = 50;

/** "1763770000123-4" -> [1763770000123, 4], comparable with `after`. */
function streamId(id) {
  const [ms, n] = id.split("-");
  return [Number(ms), Number(n ?? 0)];
}
function after(a, b) {
  return b === null || a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
}

export function showRun(view, runId, me, showConnection) {
  let snap = null;
  let lastSid = null; // newest stream id taken
  let lastId = null;
  let lastEventTs = null;
  let cancelling = false;
  const log = new EventLog();
  const ui = layout(view, runId, log);
  const charts = new Charts({ calls: ui.chartCalls, tokens: ui.chartTokens, latency: { box: ui.chartLatency, note: ui.latencyNote } });

  function take(ev) {
    const sid = streamId(ev.id);
    if (!after(sid, lastSid)) return; // already have it (a resume overlaps what we hold)
    lastSid = sid;
    lastId = ev.id;
    lastEventTs = ev.ts;
    log.add(ev);
    charts.addEvent(ev);
    if (ev.type === "call.retrying") addRetry(ui.retries, ev);
    if (ev.seq > snap.seq) applyEvent(snap, ev); // the snapshot already counts the rest
  }

  const socket = new LiveSocket(`/ws/runs/${encodeURIComponent(runId)}`, {
    since: () => lastId,
    onState(state, detail = {}) {
      showConnection(state, detail);
      if (state === "closed") {
        const notFound = detail.code === CloseCode.NOT_FOUND || detail.code === CloseCode.INVALID_RUN_ID;
        ui.error.textContent = notFound ? `Run ${runId} not found (or not yours to see).` : `Connection closed: ${detail.reason} (${detail.code}).`;
        ui.error.hidden = false;
        ui.body.hidden = notFound;
      }
    },
    onFrame(frame) {
      switch (frame.type) {
        case "hello":
          // First join: the snapshot. A resume: a newer snapshot, if the stream moved on.
          if (frame.snapshot && (!snap || frame.snapshot.seq > snap.seq)) snap = frame.snapshot;
          snap ??= emptySnapshot(runId);
          break;
        case "events":
          for (const ev of frame.events) take(ev);
          break;
        case "reset":
          // Continuity broke (history trimmed, stream recreated): start again from the snapshot.
          console.warn("livestats: stream reset", frame.reason, frame.detail);
          snap = frame.snapshot ?? emptySnapshot(runId);
          if (frame.reason === "stream_reset") {
            log.clear();
            charts.clear();
          }
          lastSid = null;
          lastId = snap.last_id;
          break;
        case "error":
          console.error("livestats: the gateway refused a message", frame);
          return;
        default:
          break; // live, heartbeat, pong: nothing to draw
      }
      schedule();
    },
  }).start();

  ui.cancel.addEventListener("click", () => ui.dialog.showModal());
  ui.abort.addEventListener("click", () => ui.dialog.close());
  ui.confirm.addEventListener("click", async () => {
    ui.dialog.close();
    ui.cancel.disabled = true;
    const answer = await fetch(`/api/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" });
    if (answer.ok) {
      cancelling = !isTerminal((await answer.json()).status);
    } else {
      const body = await answer.json().catch(() => ({ detail: answer.statusText }));
      ui.cancelNote.textContent = `Cancel refused: ${body.detail}`;
      ui.cancel.disabled = false;
    }
    schedule();
  });
  ui.errorsOnly.addEventListener("change", () => log.setErrorsOnly(ui.errorsOnly.checked));

  let scheduled = false;
  function schedule() {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(render);
    }
  }
  function render() {
    scheduled = false;
    if (!snap) return;
    const status = cancelling && !isTerminal(snap.status) ? "cancelling" : snap.status;
    ui.title.textContent = snap.name || runId;
    ui.status.textContent = status;
    ui.status.dataset.status = status;
    ui.owner.textContent = [snap.owner ?? "operator", snap.team && `team ${snap.team}`, snap.replay_of && `replay of ${snap.replay_of}`].filter(Boolean).join(" · ");
    for (const [field] of COUNTERS) ui.counters[field].textContent = String(snap[field]);
    ui.phase.textContent = snap.current_phase ?? "—";
    ui.call.textContent = isTerminal(snap.status) ? "—" : snap.current_call ?? "—";
    ui.cancel.disabled = isTerminal(snap.status) || cancelling || !me.scopes.some((s) => s === "submit" || s === "admin");
    watchQueue();
    renderPhases(ui.phases, snap);
    renderError(ui.lastError, snap.last_error);
    charts.update(snap);
    tick();
  }

  // A queued run's place and why it waits (`queue` of GET /api/runs/{id}), re-read every 2 s
  // while it is queued: the scheduler's turns are not events of the run.
  let queueWatched = false;
  function watchQueue() {
    if (snap.status !== "queued") {
      ui.queueNote.hidden = true;
      return;
    }
    if (queueWatched) return;
    queueWatched = true;
    (async function poll() {
      if (!snap || snap.status !== "queued") {
        queueWatched = false;
        ui.queueNote.hidden = true;
        return;
      }
      try {
        const answer = await fetch(`/api/runs/${encodeURIComponent(runId)}`);
        const queue = answer.ok ? (await answer.json()).queue : null;
        ui.queueNote.textContent = queue ? `waiting: ${queue.reason}` : "";
        ui.queueNote.hidden = !queue || snap.status !== "queued";
      } catch (err) {
        console.warn("queue position not read", err);
      }
      setTimeout(poll, 2000);
    })();
  }

  // Ages and clocks move without events.
  function tick() {
    if (!snap) return;
    const now = clock.now();
    ui.elapsed.textContent = duration(runElapsed(snap, now));
    const ended = isTerminal(snap.status);
    ui.timeLeft.textContent = ended ? "—" : duration(runRemaining(snap, now));
    const sign = snap.heartbeat_ts ?? snap.started_ts ?? lastEventTs ?? snap.created_ts;
    const age = sign ? Math.max(0, (now - sign) / 1000) : null;
    let level;
    if (snap.status === "stalled") level = "stalled";
    else if (ended) level = "ended";
    else if (age === null || age >= FRESH_YELLOW_S) level = "red";
    else level = age < FRESH_GREEN_S ? "green" : "yellow";
    ui.fresh.dataset.level = level;
    ui.fresh.textContent =
      level === "stalled" ? "stalled: its worker stopped sending heartbeats"
      : level === "ended" ? `ended ${snap.finished_ts ? `${duration((now - snap.finished_ts) / 1000)} ago` : ""}`
      : age === null ? "no heartbeat yet" : `updated ${Math.floor(age)} s ago`;
  }
  setInterval(tick, 1000);
}

function renderPhases(box, snap) {
  box.replaceChildren(...snap.phases.map((p) => {
    const tokens = p.predicted_tokens != null ? `${p.reported_tokens ?? p.actual_tokens} / ${p.predicted_tokens} tok` : `${p.reported_tokens ?? p.actual_tokens} tok`;
    return el("div", { class: "phase", "data-phase": p.name, "data-done": String(p.done), "data-planned": String(p.planned), "data-state": p.state ?? "pending" },
      el("span", { class: "name", text: p.name }),
      el("span", { class: "bar", title: `${p.done} of ${p.planned} done, ${p.given_up} given up` },
        el("span", { style: { width: `${percent(p.done - p.given_up, p.planned)}%`, float: "left" } }),
        el("span", { class: "failed", style: { width: `${percent(p.given_up, p.planned)}%`, float: "left" } })),
      el("span", { class: "muted num", text: `${p.done}/${p.planned} · ${p.state ?? "pending"}`, title: tokens }));
  }));
}

function renderError(box, error) {
  box.hidden = !error;
  if (!error) return;
  box.replaceChildren(
    el("h2", { text: "Last error" }),
    el("div", {}, el("b", { text: error.reason }), ` in ${error.phase}#${error.call}, attempt ${error.attempt}`),
    el("pre", { class: "mono", text: error.excerpt || "(no output)" }));
}

function addRetry(list, ev) {
  const d = ev.data;
  list.prepend(el("li", { "data-seq": String(ev.seq) }, `${d.phase}#${d.call} attempt ${d.attempt} after ${d.reason}, in ${d.delay_s.toFixed(1)} s`));
  while (list.children.length > RETRIES_SHOWN) list.lastChild.remove();
}

function layout(view, runId, log) {
  const counters = {};
  const counterRow = el("section", { class: "counters" }, ...COUNTERS.map(([field, label, kind]) =>
    el("div", { class: `counter ${kind}` }, (counters[field] = el("b", { "data-counter": field, text: "0" })), el("span", { text: label }))));
  const ui = {
    counters,
    title: el("h1", { text: runId }),
    status: el("span", { class: "status", "data-testid": "run-status", text: "…" }),
    owner: el("span", { class: "muted" }),
    cancel: el("button", { type: "button", class: "danger", "data-testid": "cancel-button", text: "Cancel run", disabled: true }),
    cancelNote: el("span", { class: "muted" }),
    queueNote: el("span", { class: "muted", "data-testid": "queue-note", hidden: true }),
    error: el("p", { class: "error", "data-testid": "run-error", hidden: true }),
    phase: el("dd", { "data-testid": "current-phase", text: "—" }),
    call: el("dd", { "data-testid": "current-call", class: "mono", text: "—" }),
    elapsed: el("dd", { "data-testid": "elapsed", text: "—" }),
    timeLeft: el("dd", { "data-testid": "time-left", text: "—" }),
    fresh: el("dd", { class: "fresh", "data-testid": "freshness", "data-level": "red", text: "—" }),
    phases: el("div", { "data-testid": "phase-progress" }),
    lastError: el("section", { class: "panel lasterror", "data-testid": "last-error", hidden: true }),
    chartCalls: el("div", { class: "chart", "data-testid": "chart-calls" }),
    chartTokens: el("div", { class: "chart", "data-testid": "chart-tokens" }),
    chartLatency: el("div", { class: "chart", "data-testid": "chart-latency" }),
    latencyNote: el("p", { class: "muted" }),
    retries: el("ul", { class: "retries", "data-testid": "retries" }),
    errorsOnly: el("input", { type: "checkbox", id: "errors-only", "data-testid": "errors-only" }),
    confirm: el("button", { type: "button", class: "danger solid", "data-testid": "cancel-confirm", text: "Cancel the run" }),
    abort: el("button", { type: "button", "data-testid": "cancel-abort", text: "Keep it running" }),
  };
  ui.dialog = el("dialog", { "data-testid": "cancel-dialog" },
    el("h2", { text: "Cancel this run?" }),
    el("p", { text: "Its worker kills the calls in flight and ends the run as cancelled. This cannot be undone." }),
    el("menu", {}, ui.abort, ui.confirm));
  const panel = (title, ...children) => el("section", { class: "panel" }, el("h2", { text: title }), ...children);
  ui.body = el("div", {},
    el("div", { class: "runhead" }, ui.title, ui.status, ui.owner, ui.queueNote, el("span", { class: "spacer" }), ui.cancelNote, ui.cancel),
    counterRow,
    ui.lastError,
    el("div", { class: "grid" },
      panel("Now", el("dl", { class: "facts" },
        el("dt", { text: "freshness" }), ui.fresh, el("dt", { text: "phase" }), ui.phase, el("dt", { text: "call" }), ui.call,
        el("dt", { text: "elapsed" }), ui.elapsed, el("dt", { text: "time left" }), ui.timeLeft,
        el("dt", { text: "run id" }), el("dd", { class: "mono", text: runId }))),
      panel("Phases", ui.phases),
      panel("Retries (newest first)", ui.retries)),
    el("div", { class: "grid" },
      panel("Calls over time", ui.chartCalls),
      panel("Tokens: predicted vs actual, by phase", ui.chartTokens),
      panel("Attempt latency", ui.chartLatency, ui.latencyNote)),
    panel("Events", el("label", { class: "muted" }, ui.errorsOnly, " failures, retries and the end only"), log.box),
    ui.dialog);
  view.replaceChildren(ui.error, ui.body);
  return ui;
}
