// The run page's DOM: built once; rendering only changes text and attributes, and every panel
// that can fill up later (last error, retries, notes) has its room from the start, so the page
// does not jump while a run streams.
import { el } from "./format.js";

export const COUNTERS = [
  ["attempts_started", "attempts", ""], ["successful_calls", "succeeded", "ok"], ["failed_attempts", "failed attempts", "fail"],
  ["calls_given_up", "calls given up", "fail"], ["retries", "retries", "retry"], ["in_flight", "in flight", ""],
  ["calls_done", "calls done", ""], ["planned_calls", "calls planned", ""],
];

function fact(label, dd) {
  return [el("dt", { text: label }), dd];
}

export function layout(view, runId, log, callDialog) {
  const counters = {};
  const counterRow = el("section", { class: "counters", "aria-label": "Counters" }, ...COUNTERS.map(([field, label, kind]) =>
    el("div", { class: `counter ${kind}` }, (counters[field] = el("b", { "data-counter": field, text: "0" })), el("span", { text: label }))));
  const ui = {
    counters,
    title: el("h1", { text: runId }),
    status: el("span", { class: "status", "data-testid": "run-status", text: "…" }),
    reason: el("p", { class: "reason", "data-testid": "run-reason", text: " " }),
    owner: el("span", { class: "muted", "data-testid": "run-owner" }),
    cancel: el("button", { type: "button", class: "danger", "data-testid": "cancel-button", text: "Cancel run", hidden: true }),
    cancelNote: el("span", { class: "muted" }),
    queueNote: el("span", { class: "muted", "data-testid": "queue-note", hidden: true }),
    error: el("p", { class: "error", "data-testid": "run-error", hidden: true }),
    phase: el("dd", { "data-testid": "current-phase", text: "—" }),
    call: el("dd", { "data-testid": "current-call", class: "mono", text: "—" }),
    elapsed: el("dd", { "data-testid": "elapsed", text: "—" }),
    timeLeft: el("dd", { "data-testid": "time-left", text: "—" }),
    eta: el("dd", { "data-testid": "eta", text: "—" }),
    cost: el("dd", { "data-testid": "run-cost", text: "—" }),
    fresh: el("dd", { class: "fresh", "data-testid": "freshness", "data-level": "red", text: "—" }),
    phases: el("div", { "data-testid": "phase-progress" }),
    lastError: el("section", { class: "panel lasterror", "data-testid": "last-error", "data-state": "none", "aria-label": "Last error" }),
    chartCalls: el("div", { class: "chart", "data-testid": "chart-calls" }),
    callsNote: el("p", { class: "muted note", "data-testid": "calls-bucket", text: " " }),
    chartTokens: el("div", { class: "chart", "data-testid": "chart-tokens" }),
    chartLatency: el("div", { class: "chart", "data-testid": "chart-latency" }),
    latencyNote: el("p", { class: "muted note", text: " " }),
    retries: el("ul", { class: "retries", "data-testid": "retries", "aria-label": "Retries, newest first", tabindex: "0" }),
    errorsOnly: el("input", { type: "checkbox", id: "errors-only", "data-testid": "errors-only" }),
    confirm: el("button", { type: "button", class: "danger solid", "data-testid": "cancel-confirm", text: "Cancel the run" }),
    abort: el("button", { type: "button", "data-testid": "cancel-abort", text: "Keep it running" }),
  };
  ui.dialog = el("dialog", { "data-testid": "cancel-dialog", "aria-labelledby": "cancel-title" },
    el("h2", { id: "cancel-title", text: "Cancel this run?" }),
    el("p", { text: "Its worker kills the calls in flight and ends the run as cancelled. This cannot be undone." }),
    el("menu", {}, ui.abort, ui.confirm));
  const panel = (title, ...children) => el("section", { class: "panel" }, el("h2", { text: title }), ...children);
  ui.body = el("div", {},
    el("div", { class: "runhead" }, ui.title, ui.status, ui.owner, ui.queueNote, el("span", { class: "spacer" }), ui.cancelNote, ui.cancel),
    ui.reason,
    counterRow,
    ui.lastError,
    el("div", { class: "grid" },
      panel("Now", el("dl", { class: "facts" },
        ...fact("freshness", ui.fresh), ...fact("phase", ui.phase), ...fact("call", ui.call),
        ...fact("elapsed", ui.elapsed), ...fact("time left", ui.timeLeft), ...fact("ends in", ui.eta), ...fact("cost", ui.cost),
        ...fact("run id", el("dd", { class: "mono", text: runId })))),
      panel("Phases", ui.phases),
      panel("Retries (newest first)", ui.retries)),
    el("div", { class: "grid" },
      panel("Calls over time", ui.chartCalls, ui.callsNote),
      panel("Tokens by phase: predicted vs actual", ui.chartTokens),
      panel("Attempt latency", ui.chartLatency, ui.latencyNote)),
    panel("Events", el("p", { class: "muted small", text: "Select a call's row (click, or Enter) to see all its attempts." }),
      el("label", { class: "muted", for: "errors-only" }, ui.errorsOnly, " failures, retries and the end only"), log.box),
    ui.dialog, callDialog.dialog);
  view.replaceChildren(ui.error, ui.body);
  return ui;
}
