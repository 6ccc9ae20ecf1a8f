// @ts-check
// The event log: every event is kept as one short row (a few dozen bytes), and only the rows in
// view are in the DOM, so 100,000 events scroll as smoothly as 100. It follows the newest event
// while scrolled to the bottom and stays put while the reader looks at older ones.
import { clockTime, el } from "./format.js";

const ROW_PX = 22;
const OVERSCAN = 8;
const MAX_ROWS = 200_000; // beyond this the oldest rows go (the stream keeps them all)

export function describe(ev) {
  const d = ev.data;
  const call = d.phase !== undefined && d.call !== undefined ? ` ${d.phase}#${d.call}` : "";
  switch (ev.type) {
    case "call.started": return `${call} attempt ${d.attempt}`;
    case "call.succeeded": return `${call} attempt ${d.attempt} ${d.duration_s.toFixed(2)} s ${d.bytes} B${d.usage ? ` ${d.usage.input_tokens + d.usage.output_tokens} tok` : ""}`;
    case "call.failed": return `${call} attempt ${d.attempt} ${d.reason}${d.final ? " (final)" : ""} ${d.excerpt ? `— ${d.excerpt.slice(0, 160)}` : ""}`;
    case "call.retrying": return `${call} attempt ${d.attempt} ${d.reason}, in ${d.delay_s.toFixed(1)} s`;
    case "phase.started": return ` ${d.phase} (${d.calls} calls, ${d.concurrency} at once)`;
    case "phase.finished": return ` ${d.phase}: ${d.succeeded} ok, ${d.given_up} given up, ${d.duration_s.toFixed(1)} s`;
    case "heartbeat": return ` ${d.in_flight} in flight, ${d.remaining_s.toFixed(0)} s left`;
    case "run.queued": return ` ${d.name}: ${d.planned_calls} calls planned`;
    case "run.started": return ` on ${d.worker}, timeout ${d.timeout_s} s`;
    case "run.finished": return ` ${d.outcome}: ${d.reason}${d.detail ? ` — ${d.detail}` : ""}`;
    default: return "";
  }
}

export class EventLog {
  constructor() {
    this.rows = []; // {seq, type, ts, text}
    this.errorsOnly = false;
    this.view = []; // indexes into rows under the current filter
    this.spacer = el("div");
    this.box = el("div", { class: "log", "data-testid": "event-log", "data-count": "0", tabindex: "0" }, this.spacer);
    this.follow = true;
    this.scheduled = false;
    this.count = 0; // distinct events received, also those dropped from the front
    this.onCall = null; // (key) => void: a call's row was chosen
    const choose = (event) => {
      const key = event.target.closest?.("[data-call]")?.dataset.call;
      if (key && this.onCall) this.onCall(key);
    };
    this.box.addEventListener("click", choose);
    this.box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        choose(event);
      }
    });
    this.box.addEventListener("scroll", () => {
      this.follow = this.box.scrollTop + this.box.clientHeight >= this.box.scrollHeight - ROW_PX;
      this.schedule();
    });
  }

  setErrorsOnly(on) {
    this.errorsOnly = on;
    this.view = on ? this.rows.flatMap((r, i) => (isTrouble(r.type) ? [i] : [])) : [];
    this.schedule();
  }

  add(ev) {
    this.count += 1;
    // The time is formatted when the row is drawn: formatting 100,000 of them up front costs seconds.
    const d = ev.data;
    const call = ev.type.startsWith("call.") && d.phase !== undefined ? `${d.phase}#${d.call}` : null;
    const row = { seq: ev.seq, type: ev.type, ts: ev.ts, call, text: `#${ev.seq}  ${ev.type}${describe(ev)}` };
    this.rows.push(row);
    if (this.errorsOnly && isTrouble(row.type)) this.view.push(this.rows.length - 1);
    if (this.rows.length > MAX_ROWS) this.trim();
    this.schedule();
  }

  clear() {
    this.rows = [];
    this.count = 0;
    this.setErrorsOnly(this.errorsOnly);
  }

  trim() {
    const drop = this.rows.length - MAX_ROWS * 0.9;
    this.rows.splice(0, drop);
    this.setErrorsOnly(this.errorsOnly);
  }

  schedule() {
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.render());
    }
  }

  render() {
    this.scheduled = false;
    this.box.dataset.count = String(this.count);
    const total = this.errorsOnly ? this.view.length : this.rows.length;
    this.spacer.style.height = `${total * ROW_PX}px`;
    if (this.follow) this.box.scrollTop = this.box.scrollHeight;
    const first = Math.max(0, Math.floor(this.box.scrollTop / ROW_PX) - OVERSCAN);
    const last = Math.min(total, Math.ceil((this.box.scrollTop + this.box.clientHeight) / ROW_PX) + OVERSCAN);
    // Rows still in view keep their node: a click (mousedown, then mouseup on the same node) or
    // the keyboard focus on a row survives the redraws of a run that is streaming.
    /** @type {Map<number, number>} */
    const wanted = new Map(); // seq -> index in the current view
    for (let i = first; i < last; i++) wanted.set(this.rows[this.errorsOnly ? this.view[i] : i].seq, i);
    for (const node of [...this.box.children]) {
      if (node === this.spacer) continue;
      const element = /** @type {HTMLElement} */ (node);
      const i = wanted.get(Number(element.dataset.seq));
      if (i === undefined) {
        element.remove();
      } else {
        element.style.top = `${i * ROW_PX}px`;
        wanted.delete(Number(element.dataset.seq));
      }
    }
    for (const i of wanted.values()) {
      const row = this.rows[this.errorsOnly ? this.view[i] : i];
      const node = el("div", {
        class: "row", "data-seq": String(row.seq), "data-type": row.type, text: `${clockTime(row.ts)}  ${row.text}`,
        // A call's row opens its attempts: focusable, and said to be a button.
        ...(row.call ? { "data-call": row.call, role: "button", tabindex: "0" } : {}),
      });
      node.style.top = `${i * ROW_PX}px`;
      this.box.append(node);
    }
  }
}

function isTrouble(type) {
  return type === "call.failed" || type === "call.retrying" || type === "run.finished";
}
