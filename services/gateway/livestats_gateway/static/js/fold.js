// @ts-check
// The run snapshot as a fold of its events: the browser's copy of shared/livestats_shared/stats.py
// `delta_for`, applied to the snapshot shape the API returns (RunSnapshot). A snapshot already
// counts every event up to its `seq`; `applyEvent` must only see events after that.

const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "stalled"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

export function emptySnapshot(runId) {
  return {
    run_id: runId, status: "unknown", name: "", seq: 0, last_id: null, planned_calls: 0,
    attempts_started: 0, successful_calls: 0, failed_attempts: 0, calls_given_up: 0, calls_done: 0,
    retries: 0, in_flight: 0, current_phase: null, current_call: null, last_error: null,
    input_tokens: 0, output_tokens: 0, total_tokens: 0, predicted_tokens: 0,
    created_ts: null, started_ts: null, finished_ts: null, deadline_ts: null, heartbeat_ts: null,
    heartbeat_s: null, elapsed_s: null, remaining_s: null, outcome: null, reason: null, detail: null,
    worker: null, external: false, owner: null, team: null, replay_of: null, tags: [], truncated: 0,
    cost_nusd: 0, unpriced_attempts: 0, phases: [], models: [], cost_usd: 0,
  };
}

const NANO_PER_USD = 1e9;
const UNKNOWN_MODEL = "unknown";

function modelOf(snap, name) {
  let model = snap.models.find((m) => m.model === name);
  if (!model) {
    model = { model: name, attempts: 0, input_tokens: 0, output_tokens: 0, cost_nusd: 0, unpriced_attempts: 0, cost_usd: 0 };
    snap.models.push(model);
    snap.models.sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0));
  }
  return model;
}

// stats.py `_spend`: tokens and cost of an attempt that reported usage. Unpriced: cost unknown (null).
function spend(snap, phase, d) {
  if (!d.usage) return;
  const input = d.usage.input_tokens ?? 0;
  const output = d.usage.output_tokens ?? 0;
  snap.input_tokens += input;
  snap.output_tokens += output;
  snap.total_tokens += input + output;
  const model = modelOf(snap, d.model ?? UNKNOWN_MODEL);
  model.attempts += 1;
  model.input_tokens += input;
  model.output_tokens += output;
  if (d.cost_nusd == null) {
    snap.unpriced_attempts += 1;
    phase.unpriced_attempts += 1;
    model.unpriced_attempts += 1;
  } else {
    snap.cost_nusd += d.cost_nusd;
    phase.cost_nusd += d.cost_nusd;
    model.cost_nusd += d.cost_nusd;
  }
  snap.cost_usd = snap.unpriced_attempts ? null : snap.cost_nusd / NANO_PER_USD;
  model.cost_usd = model.unpriced_attempts ? null : model.cost_nusd / NANO_PER_USD;
}

function phaseOf(snap, name) {
  let phase = snap.phases.find((p) => p.name === name);
  if (!phase) {
    // A producer may start a phase its plan did not name: show it rather than drop its counts.
    phase = {
      name, planned: 0, done: 0, given_up: 0, state: null, category: null, complexity: null, deliverables: null,
      predicted_tokens: null, actual_tokens: 0, reported_tokens: null, is_test: false,
      truncated: 0, model: null, cost_nusd: 0, unpriced_attempts: 0,
    };
    snap.phases.push(phase);
  }
  return phase;
}

function setEstimate(phase, d) {
  for (const key of ["category", "complexity", "deliverables", "predicted_tokens"]) {
    if (d[key] !== undefined && d[key] !== null) phase[key] = d[key];
  }
}

/** Apply one event envelope ({type, seq, ts, data, id}) to `snap` in place. */
export function applyEvent(snap, ev) {
  const d = ev.data;
  switch (ev.type) {
    case "run.queued":
      Object.assign(snap, {
        status: "queued", name: d.name, planned_calls: d.planned_calls, created_ts: ev.ts,
        owner: d.owner ?? snap.owner, team: d.team ?? snap.team, replay_of: d.replay_of ?? snap.replay_of,
        external: d.spec?.external === true,
      });
      if (d.tags?.length) snap.tags = [...d.tags];
      for (const p of d.phases) {
        const phase = phaseOf(snap, p.name);
        phase.planned = p.calls;
        if (p.model != null) phase.model = p.model;
        setEstimate(phase, p);
        phase.is_test = !!p.is_test;
      }
      break;
    case "run.started":
      Object.assign(snap, { status: "running", started_ts: ev.ts, worker: d.worker, deadline_ts: d.deadline_ts });
      if (d.heartbeat_s != null) snap.heartbeat_s = d.heartbeat_s;
      break;
    case "phase.started": {
      snap.current_phase = d.phase;
      const phase = phaseOf(snap, d.phase);
      phase.state = "running";
      setEstimate(phase, d);
      break;
    }
    case "phase.finished": {
      const phase = phaseOf(snap, d.phase);
      phase.state = d.state ?? "finished"; // a phase closed by the run's end: its final state
      if (d.actual_tokens != null) phase.reported_tokens = d.actual_tokens;
      break;
    }
    case "call.started":
      snap.attempts_started += 1;
      snap.in_flight += 1;
      if (d.attempt === 1 && d.predicted_tokens != null) snap.predicted_tokens += d.predicted_tokens;
      snap.current_call = `${d.phase}#${d.call}`;
      break;
    case "call.succeeded": {
      const phase = phaseOf(snap, d.phase);
      snap.successful_calls += 1;
      snap.in_flight -= 1;
      snap.calls_done += 1;
      phase.done += 1;
      if (d.usage) phase.actual_tokens += (d.usage.input_tokens ?? 0) + (d.usage.output_tokens ?? 0);
      spend(snap, phase, d);
      snap.last_error = null; // a later success clears the last error
      break;
    }
    case "call.failed": {
      const phase = phaseOf(snap, d.phase);
      snap.failed_attempts += 1;
      if (d.started !== false) snap.in_flight -= 1; // false: given up before the attempt started
      if (d.final) {
        snap.calls_done += 1;
        snap.calls_given_up += 1;
        phase.done += 1;
        phase.given_up += 1;
      }
      if (d.reason === "truncated") {
        snap.truncated += 1;
        phase.truncated += 1;
      }
      spend(snap, phase, d);
      snap.last_error = { phase: d.phase, call: d.call, attempt: d.attempt, reason: d.reason, excerpt: d.excerpt ?? "", ts: ev.ts };
      break;
    }
    case "call.retrying":
      snap.retries += 1;
      break;
    case "heartbeat":
      Object.assign(snap, { heartbeat_ts: ev.ts, elapsed_s: d.elapsed_s, remaining_s: d.remaining_s });
      break;
    case "run.finished":
      Object.assign(snap, { status: d.outcome, outcome: d.outcome, reason: d.reason, detail: d.detail ?? "", finished_ts: ev.ts });
      if (d.elapsed_s != null) snap.elapsed_s = d.elapsed_s;
      if (d.remaining_s != null) snap.remaining_s = d.remaining_s; // frozen at the end
      break;
    default:
      console.warn("livestats: unknown event type", ev.type); // newer producer: counted in seq only
  }
  snap.seq = ev.seq;
  snap.last_id = ev.id;
}
