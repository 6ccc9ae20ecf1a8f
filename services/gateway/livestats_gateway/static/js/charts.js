// @ts-check
// The run page's charts, drawn with uPlot (vendored: static/vendor). Events are folded into
// small aggregates as they arrive; the charts redraw from those at most twice a second.

const COLORS = { ok: "#1f9d55", fail: "#d64545", retry: "#d98e04", predicted: "#9aa5b8", actual: "#2f6fde" };
const LATENCY_EDGES_S = [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120];
// Upper bounds in seconds; the last bin holds everything slower.
const LATENCY_LABELS = [...LATENCY_EDGES_S.map((s) => `${s}`), `${LATENCY_EDGES_S.at(-1)}+`];
const MAX_BUCKETS = 120;
// Bucket widths in seconds: the smallest that keeps the chart under MAX_BUCKETS buckets. It grows
// with the run, in round steps, and the note under the chart always says which one is in use.
const BUCKET_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
const REDRAW_MS = 500;

function bars(align) {
  return window.uPlot.paths.bars({ size: [0.4, 48], align });
}

// Counts start at zero.
const FROM_ZERO = { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] };
const FEW_POINTS = { show: (_u, _si, i0, i1) => i1 - i0 < 30, size: 5 };

function categoryAxis(labels) {
  return {
    splits: () => labels.map((_, i) => i),
    values: (_u, splits) => splits.map((i) => labels[i] ?? ""),
    grid: { show: false },
  };
}

class Plot {
  constructor(container, options) {
    this.container = container;
    this.options = options;
    this.plot = null;
  }

  draw(data) {
    const width = Math.max(200, this.container.clientWidth - 8);
    if (!this.plot) {
      // A static legend: the series names, without the per-cursor values.
      this.plot = new window.uPlot({ width, height: 200, legend: { live: false }, ...this.options }, data, this.container);
      return;
    }
    if (Math.abs(this.plot.width - width) > 4) this.plot.setSize({ width, height: 200 });
    this.plot.setData(data);
  }
}

export class Charts {
  constructor({ calls, tokens, latency }) {
    this.callsNote = calls.note;
    this.perSecond = new Map(); // epoch second -> [succeeded, failed, retried]
    this.latencyOk = new Array(LATENCY_LABELS.length).fill(0);
    this.latencyFail = new Array(LATENCY_LABELS.length).fill(0);
    this.durations = []; // for the percentiles under the histogram
    this.latencyNote = latency.note;
    this.calls = new Plot(calls.box, {
      scales: { y: FROM_ZERO },
      series: [{}, ...[["succeeded", COLORS.ok], ["failed", COLORS.fail], ["retried", COLORS.retry]].map(([label, stroke]) => ({ label, stroke, width: 1.5, points: FEW_POINTS }))],
      axes: [{}, { label: "attempts per bucket", size: 50 }],
    });
    this.tokenLabels = [];
    this.tokens = new Plot(tokens, {
      scales: { x: { time: false, range: (_u) => [-0.5, Math.max(0.5, this.tokenLabels.length - 0.5)] }, y: FROM_ZERO },
      series: [{}, { label: "predicted", fill: COLORS.predicted, stroke: COLORS.predicted, paths: bars(-1), points: { show: false } },
        { label: "actual", fill: COLORS.actual, stroke: COLORS.actual, paths: bars(1), points: { show: false } }],
      axes: [categoryAxis(this.tokenLabels), { label: "tokens", size: 60 }],
    });
    this.latency = new Plot(latency.box, {
      scales: { x: { time: false, range: [-0.5, LATENCY_LABELS.length - 0.5] }, y: FROM_ZERO },
      series: [{}, { label: "succeeded", fill: COLORS.ok, stroke: COLORS.ok, paths: bars(-1), points: { show: false } },
        { label: "failed", fill: COLORS.fail, stroke: COLORS.fail, paths: bars(1), points: { show: false } }],
      axes: [{ ...categoryAxis(LATENCY_LABELS), label: "seconds, at most" }, { label: "attempts", size: 50 }],
    });
    this.timer = null;
    this.snap = null;
  }

  addEvent(ev) {
    const column = { "call.succeeded": 0, "call.failed": 1, "call.retrying": 2 }[ev.type];
    if (column === undefined) return;
    const second = Math.floor(ev.ts / 1000);
    let row = this.perSecond.get(second);
    if (!row) this.perSecond.set(second, (row = [0, 0, 0]));
    row[column] += 1;
    if (column < 2) {
      const d = ev.data.duration_s;
      let bin = LATENCY_EDGES_S.findIndex((edge) => d <= edge);
      if (bin < 0) bin = LATENCY_EDGES_S.length;
      (column === 0 ? this.latencyOk : this.latencyFail)[bin] += 1;
      if (this.durations.length < 200_000) this.durations.push(d);
    }
  }

  clear() {
    this.perSecond.clear();
    this.latencyOk.fill(0);
    this.latencyFail.fill(0);
    this.durations = [];
  }

  /** Redraw soon with `snap` (the per-phase token figures come from the snapshot). */
  update(snap) {
    this.snap = snap;
    if (this.timer === null) this.timer = setTimeout(() => this.redraw(), REDRAW_MS);
  }

  redraw() {
    this.timer = null;
    this.drawCalls();
    const phases = this.snap?.phases ?? [];
    this.tokenLabels.splice(0, this.tokenLabels.length, ...phases.map((p) => p.name));
    this.tokens.draw([
      phases.map((_, i) => i),
      phases.map((p) => p.predicted_tokens ?? null),
      phases.map((p) => p.reported_tokens ?? p.actual_tokens),
    ]);
    this.latency.draw([LATENCY_LABELS.map((_, i) => i), this.latencyOk, this.latencyFail]);
    this.latencyNote.textContent = percentiles(this.durations);
  }

  drawCalls() {
    const seconds = [...this.perSecond.keys()];
    if (!seconds.length) {
      this.calls.draw([[], [], [], []]);
      this.callsNote.textContent = "no attempt has ended yet";
      return;
    }
    // From the first event to the last: nothing is drawn for time that has not happened yet.
    const first = Math.min(...seconds);
    const last = Math.max(...seconds);
    const width = BUCKET_STEPS_S.find((w) => (last - first + 1) / w <= MAX_BUCKETS) ?? BUCKET_STEPS_S[BUCKET_STEPS_S.length - 1];
    const start = first - (first % width);
    const n = Math.floor((last - start) / width) + 1;
    const xs = Array.from({ length: n }, (_, i) => start + i * width);
    const cols = [new Array(n).fill(0), new Array(n).fill(0), new Array(n).fill(0)];
    for (const [second, row] of this.perSecond) {
      const i = Math.floor((second - start) / width);
      for (let c = 0; c < 3; c++) cols[c][i] += row[c];
    }
    this.calls.draw([xs, ...cols]);
    this.callsNote.dataset.bucketS = String(width);
    this.callsNote.textContent = `Per ${width} s bucket: attempts that ended, by outcome, and retries scheduled. The newest bucket may be partial.`;
  }
}

function percentiles(values) {
  if (!values.length) return "no finished attempts yet";
  const sorted = Float64Array.from(values).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(2);
  return `p50 ${at(0.5)} s · p95 ${at(0.95)} s · max ${sorted[sorted.length - 1].toFixed(2)} s · ${sorted.length} attempts`;
}
