// @ts-check
// The run page: `/ws/runs/{id}` sends `hello` (the snapshot at join), the history, `live`, then
// live events. Counters are the snapshot plus the events after its `seq`; the log and the charts
// take every event once, by stream id. A reconnect resumes with `since` = the last id taken, so
// after any number of drops the numbers are exactly the stream's.
import { CallDialog, CallIndex, callKey } from "./calls.js";
import { Charts } from "./charts.js";
import { LiveSocket, clock } from "./conn.js";
import { Throughput, WINDOW_S } from "./eta.js";
import { EventLog } from "./eventlog.js";
import { applyEvent, emptySnapshot, isTerminal } from "./fold.js";
import { duration, el, outcomeText, ownerLabel, runElapsed, runRemaining } from "./format.js";
import { renderPhases } from "./phases.js";
import { CloseCode } from "./protocol.js";
import { COUNTERS, layout } from "./runlayout.js";

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
  const calls = new CallIndex();
  const callDialog = new CallDialog(calls);
  const throughput = new Throughput();
  const ui = layout(view, runId, log, callDialog);
  const charts = new Charts({
    calls: { box: ui.chartCalls, note: ui.callsNote }, tokens: ui.chartTokens, latency: { box: ui.chartLatency, note: ui.latencyNote },
  });
  log.onCall = (key) => callDialog.open(key);

  function take(ev) {
    const sid = streamId(ev.id);
    if (!after(sid, lastSid)) return; // already have it (a resume overlaps what we hold)
    lastSid = sid;
    lastId = ev.id;
    lastEventTs = ev.ts;
    log.add(ev);
    calls.add(ev);
    throughput.add(ev);
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
            calls.clear();
            throughput.clear();
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
    ui.reason.textContent = outcomeText(snap) || "\u00a0";
    ui.reason.dataset.status = status;
    ui.owner.textContent = [`by ${ownerLabel(snap.owner)}`, snap.team && `team ${snap.team}`, snap.replay_of && `replay of ${snap.replay_of}`].filter(Boolean).join(" · ");
    for (const [field] of COUNTERS) ui.counters[field].textContent = String(snap[field]);
    ui.phase.textContent = snap.current_phase ?? "—";
    ui.call.textContent = isTerminal(snap.status) ? "—" : snap.current_call ?? "—";
    // A finished run has nothing to cancel: no button at all. Readers never get one.
    ui.cancel.hidden = isTerminal(snap.status) || !me.scopes.some((s) => s === "submit" || s === "admin");
    ui.cancel.disabled = cancelling;
    watchQueue();
    renderPhases(ui.phases, snap);
    renderError(ui.lastError, snap.last_error, callDialog);
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
    ui.eta.textContent = ended ? "—" : etaText(throughput, snap, now);
    ui.cost.textContent = costText(snap);
    ui.cost.title = (snap.models ?? []).map((/** @type {any} */ m) => `${m.model}: ${costText(m)}`).join("\n");
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

function etaText(throughput, snap, now) {
  const rate = throughput.rate(now);
  const eta = throughput.eta(snap, now);
  if (eta === null) return snap.status === "running" ? `estimating (after 2 calls in ${WINDOW_S} s)` : "—";
  // Every planned call done, with no recent calls to give a rate: the run is finishing.
  if (rate === null) return "any moment: every planned call is done";
  return `≈ ${duration(eta)} (estimate: ${rate.toFixed(1)} calls/s, last ${WINDOW_S} s)`;
}

// The box keeps its room whether or not there is an error, so nothing below it moves.
/**
 * A run's (or one model's) cost: unknown while an attempt's model has no price, never $0 for that.
 * @param {{cost_nusd: number, unpriced_attempts: number}} spend
 */
export function costText(spend) {
  const usd = spend.cost_nusd / 1e9;
  const shown = usd >= 0.01 ? `$${usd.toFixed(2)}` : `$${usd.toPrecision(3)}`;
  if (!spend.unpriced_attempts) return spend.cost_nusd ? shown : "—";
  return `unknown (${spend.cost_nusd ? `at least ${shown}, ` : ""}${spend.unpriced_attempts} unpriced)`;
}

function renderError(box, error, callDialog) {
  if (box.shown === error && box.childElementCount) return; // unchanged: keep the reader's "show all"
  box.shown = error;
  box.dataset.state = error ? "error" : "none";
  box.classList.remove("expanded");
  if (!error) {
    box.replaceChildren(el("h2", { text: "Last error" }), el("p", { class: "muted", text: "None since the last success." }));
    return;
  }
  const key = callKey(error.phase, error.call);
  const open = el("button", { type: "button", class: "link", "data-testid": "last-error-call", text: key });
  open.addEventListener("click", () => callDialog.open(key));
  const excerpt = el("pre", { class: "mono", tabindex: "0", "aria-label": "error excerpt", text: error.excerpt || "(no output)" });
  const more = el("button", { type: "button", class: "link", "data-testid": "last-error-expand", text: "show all", "aria-expanded": "false" });
  more.addEventListener("click", () => {
    const expanded = box.classList.toggle("expanded");
    more.textContent = expanded ? "show less" : "show all";
    more.setAttribute("aria-expanded", String(expanded));
  });
  box.replaceChildren(
    el("h2", { text: "Last error" }),
    el("div", { class: "line" }, el("b", { text: error.reason }), " in ", open, ` attempt ${error.attempt} `, more),
    excerpt);
}

function addRetry(list, ev) {
  const d = ev.data;
  list.prepend(el("li", { "data-seq": String(ev.seq) }, `${d.phase}#${d.call} attempt ${d.attempt} after ${d.reason}, in ${d.delay_s.toFixed(1)} s`));
  while (list.children.length > RETRIES_SHOWN) list.lastChild.remove();
}
