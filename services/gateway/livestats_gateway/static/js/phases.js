// The run page's phases: progress, the phase's state (`running`, then final: finished, failed,
// timed_out, cancelled or stalled) and its token estimation (predicted, actual, SMAPE, waste
// ratio) in plain sight. SMAPE and waste are defined as in shared/livestats_shared/estimation.py
// (the API's /estimation); for a phase still running they are marked "so far".
import { isTerminal } from "./fold.js";
import { el, percent } from "./format.js";

/** |P - A| / ((|P| + |A|) / 2) x 100, 0 when both are 0. */
export function smape(predicted, actual) {
  if (predicted === 0 && actual === 0) return 0;
  return (Math.abs(predicted - actual) / ((Math.abs(predicted) + Math.abs(actual)) / 2)) * 100;
}

/** Predicted / actual; null when nothing was used. */
export function wasteRatio(predicted, actual) {
  return actual === 0 ? null : predicted / actual;
}

/** The state to show: a run that ended while the phase ran closes it with the run's outcome
 * (a producer that closes its phases itself says so in the snapshot, and that wins). */
export function phaseState(phase, snap) {
  if (phase.state === "running" && isTerminal(snap.status)) return snap.status;
  return phase.state ?? "pending";
}

function usedTokens(p) {
  return p.reported_tokens ?? p.actual_tokens;
}

function cell(label, value, field) {
  return el("div", { class: "cell" }, el("span", { class: "label", text: label }), el("b", { "data-field": field, text: value }));
}

function phaseView(p, snap) {
  const state = phaseState(p, snap);
  const used = usedTokens(p);
  const predicted = p.predicted_tokens;
  const soFar = state === "running" ? " so far" : "";
  const known = predicted !== null && predicted !== undefined;
  const waste = known ? wasteRatio(predicted, used) : null;
  return el("div", { class: "phase", "data-phase": p.name, "data-done": String(p.done), "data-planned": String(p.planned), "data-state": state },
    el("div", { class: "phasehead" },
      el("span", { class: "name", text: p.name }),
      el("span", { class: "pstate", "data-field": "state", "data-state": state, text: state }),
      el("span", { class: "num", "data-field": "progress", text: `${p.done}/${p.planned} done · ${p.given_up} given up` })),
    el("span", { class: "bar", role: "img", "aria-label": `${p.done} of ${p.planned} done, ${p.given_up} given up` },
      el("span", { style: { width: `${percent(p.done - p.given_up, p.planned)}%`, float: "left" } }),
      el("span", { class: "failed", style: { width: `${percent(p.given_up, p.planned)}%`, float: "left" } })),
    el("div", { class: "estimate" },
      cell("predicted tok", known ? String(predicted) : "—", "predicted"),
      cell(`actual tok${soFar}`, String(used), "actual"),
      cell(`SMAPE${soFar}`, known ? `${smape(predicted, used).toFixed(0)} %` : "—", "smape"),
      cell(`waste${soFar}`, waste === null ? "—" : `${waste.toFixed(2)}×`, "waste")));
}

export function renderPhases(box, snap) {
  box.replaceChildren(...snap.phases.map((p) => phaseView(p, snap)));
}
