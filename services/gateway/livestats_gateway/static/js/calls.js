// One call's attempts, from the events the page already holds (the join replays the whole
// history, so nothing is fetched again): "generate#12" -> its attempts in order, each with how it
// ended, the reason, the excerpt, the duration and the tokens. A dialog shows one call.
import { el } from "./format.js";

const MAX_ATTEMPTS_KEPT = 400_000; // beyond this the page stops indexing (the stream keeps them all)

export function callKey(phase, call) {
  return `${phase}#${call}`;
}

export class CallIndex {
  constructor() {
    this.calls = new Map(); // "phase#call" -> [{attempt, state, started, ended, reason, excerpt, duration_s, tokens, delay_s, final}]
    this.kept = 0;
    this.full = false;
  }

  add(ev) {
    const d = ev.data;
    if (!ev.type.startsWith("call.") || d.phase === undefined || d.call === undefined) return;
    const key = callKey(d.phase, d.call);
    let attempts = this.calls.get(key);
    if (!attempts) {
      if (this.kept >= MAX_ATTEMPTS_KEPT) {
        this.full = true;
        return;
      }
      this.calls.set(key, (attempts = []));
    }
    // call.retrying names the attempt to come; its delay belongs to the one that failed.
    const number = ev.type === "call.retrying" ? d.attempt - 1 : d.attempt;
    let a = attempts.find((x) => x.attempt === number);
    if (!a) {
      a = { attempt: number, state: "running", started: null, ended: null, reason: "", excerpt: "", duration_s: null, tokens: null, delay_s: null, final: false };
      attempts.push(a);
      attempts.sort((x, y) => x.attempt - y.attempt);
      this.kept += 1;
    }
    if (ev.type === "call.started") Object.assign(a, { state: "running", started: ev.ts });
    else if (ev.type === "call.succeeded") {
      Object.assign(a, { state: "succeeded", ended: ev.ts, duration_s: d.duration_s });
      if (d.usage) a.tokens = (d.usage.input_tokens ?? 0) + (d.usage.output_tokens ?? 0);
    } else if (ev.type === "call.failed") {
      Object.assign(a, { state: d.final ? "failed, given up" : "failed", ended: ev.ts, duration_s: d.duration_s, reason: d.reason, excerpt: d.excerpt ?? "", final: d.final });
    } else if (ev.type === "call.retrying") {
      a.delay_s = d.delay_s;
    }
  }

  get(key) {
    return this.calls.get(key) ?? [];
  }

  clear() {
    this.calls.clear();
    this.kept = 0;
    this.full = false;
  }
}

/** The dialog that shows one call's attempts; `open(key)` fills and shows it. */
export class CallDialog {
  constructor(index) {
    this.index = index;
    this.title = el("h2", { id: "call-dialog-title" });
    this.body = el("div", { class: "attempts", tabindex: "0", "aria-label": "attempts" });
    this.close = el("button", { type: "button", "data-testid": "call-dialog-close", text: "Close" });
    this.dialog = el("dialog", { class: "calldialog", "data-testid": "call-dialog", "aria-labelledby": "call-dialog-title" },
      this.title, this.body, el("menu", {}, this.close));
    this.close.addEventListener("click", () => this.dialog.close());
  }

  open(key) {
    const attempts = this.index.get(key);
    this.title.textContent = `Call ${key}: ${attempts.length} attempt${attempts.length === 1 ? "" : "s"}`;
    if (!attempts.length) {
      const why = this.index.full ? "the page stopped indexing calls (too many); the CLI's `livestats events` has them all" : "no event of this call yet";
      this.body.replaceChildren(el("p", { class: "muted", text: why }));
    } else {
      this.body.replaceChildren(...attempts.map((a) => attemptView(a)));
    }
    this.dialog.dataset.call = key;
    if (!this.dialog.open) this.dialog.showModal();
  }
}

function attemptView(a) {
  const facts = [
    ["outcome", a.state],
    ["reason", a.reason || "—"],
    ["duration", a.duration_s === null ? "—" : `${a.duration_s.toFixed(2)} s`],
    ["tokens", a.tokens === null ? "—" : String(a.tokens)],
  ];
  if (a.delay_s !== null) facts.push(["retried after", `${a.delay_s.toFixed(1)} s`]);
  return el("section", { class: "attempt", "data-attempt": String(a.attempt), "data-state": a.state },
    el("h3", { text: `Attempt ${a.attempt}` }),
    el("dl", { class: "facts" }, ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k, text: v })])),
    a.excerpt ? el("pre", { class: "mono excerpt", "data-field": "excerpt", tabindex: "0", "aria-label": `excerpt of attempt ${a.attempt}`, text: a.excerpt }) : "");
}
