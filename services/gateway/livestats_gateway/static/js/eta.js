// When will the run end? An estimate from observed throughput: calls done (succeeded, or given
// up) per second over the last WINDOW_S seconds of the run's own event times, applied to the
// calls still to do. Stated as an estimate on the page, with the rate it comes from.

export const WINDOW_S = 60;

export class Throughput {
  constructor() {
    this.done = []; // event times (ms) of calls that finished for good, in arrival order
  }

  add(ev) {
    if (ev.type === "call.succeeded" || (ev.type === "call.failed" && ev.data.final)) this.done.push(ev.ts);
  }

  clear() {
    this.done = [];
  }

  /** Calls per second over the window ending at `nowMs`, or null with fewer than 2 calls done in it. */
  rate(nowMs) {
    const from = nowMs - WINDOW_S * 1000;
    let i = this.done.length;
    while (i > 0 && this.done[i - 1] > from) i -= 1;
    const recent = this.done.length - i;
    if (recent < 2) return null;
    // The window is the whole minute, or less if the run is younger (its first call in it).
    const first = i === 0 ? this.done[0] : from;
    const span = Math.max(1, (nowMs - first) / 1000);
    return recent / span;
  }

  /** Seconds to the end at the current rate, or null if it cannot be told yet. */
  eta(snap, nowMs) {
    const left = snap.planned_calls - snap.calls_done;
    if (left <= 0) return 0;
    const rate = this.rate(nowMs);
    return rate ? left / rate : null;
  }
}
