// @ts-check
// The runs page: `/ws/runs` sends the newest runs (`index`), then each change (`runs`); per run
// the summary with the highest `seq` wins, so a late or repeated update never rolls a row back.
import { LiveSocket, clock } from "./conn.js";
import { duration, el, percent, runElapsed } from "./format.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out", "stalled"];
const COLUMNS = [
  ["name", "Run"], ["status", "Status"], ["phase", "Phase"], ["progress", "Progress"],
  ["elapsed", "Elapsed"], ["failures", "Failures"], ["retries", "Retries"], ["owner", "Owner"],
];

export function showRuns(view, me, showConnection) {
  const runs = new Map(); // run_id -> newest summary
  const filter = el("select", { "data-testid": "status-filter", "aria-label": "Status" },
    el("option", { value: "", text: "all statuses" }),
    ...STATUSES.map((s) => el("option", { value: s, text: s })));
  filter.value = new URLSearchParams(location.search).get("status") ?? "";
  const body = el("tbody");
  const empty = el("p", { class: "muted", text: "No runs yet. Submit one: livestats submit SPEC, or POST /api/runs." });
  const table = el("table", { class: "runs", "data-testid": "runs-table" },
    el("thead", {}, el("tr", {}, ...COLUMNS.map(([, title]) => el("th", { text: title })))), body);
  view.replaceChildren(
    el("div", { class: "toolbar" }, el("h1", { text: "Runs", class: "title" }),
      el("span", { class: "spacer" }), el("label", { class: "muted", text: "Show " }), filter),
    table, empty);

  filter.addEventListener("change", () => {
    const url = new URL(location.href);
    if (filter.value) url.searchParams.set("status", filter.value);
    else url.searchParams.delete("status");
    history.replaceState(null, "", url);
    render();
  });

  function row(run) {
    const elapsed = runElapsed(run, clock.now());
    const progress = el("td", { "data-field": "progress", class: "num" },
      el("span", { class: "bar" }, el("span", { style: { width: `${percent(run.calls_done, run.planned_calls)}%` } })),
      `${run.calls_done} / ${run.planned_calls}`);
    return el("tr", { "data-run-id": run.run_id, "data-status": run.status },
      el("td", { "data-field": "name" }, el("a", { href: `/runs/${encodeURIComponent(run.run_id)}`, text: run.name || run.run_id }),
        el("div", { class: "muted mono", text: run.run_id })),
      el("td", { "data-field": "status" }, el("span", { class: "status", "data-status": run.status, text: run.status })),
      el("td", { "data-field": "phase", text: run.current_phase ?? "—" }),
      progress,
      el("td", { "data-field": "elapsed", class: "num", text: duration(elapsed) }),
      el("td", { "data-field": "failures", class: "num", text: String(run.failed_attempts) }),
      el("td", { "data-field": "retries", class: "num", text: String(run.retries) }),
      el("td", { "data-field": "owner", text: run.owner ?? "—" }));
  }

  let scheduled = false;
  function render() {
    scheduled = false;
    const shown = [...runs.values()]
      .filter((r) => !filter.value || r.status === filter.value)
      .sort((a, b) => (b.created_ts ?? 0) - (a.created_ts ?? 0));
    body.replaceChildren(...shown.map(row));
    empty.hidden = shown.length > 0;
    empty.textContent = runs.size ? `No ${filter.value} runs.` : "No runs yet. Submit one: livestats submit SPEC, or POST /api/runs.";
  }
  function schedule() {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(render);
    }
  }

  function take(summaries) {
    for (const s of summaries) {
      const known = runs.get(s.run_id);
      if (!known || s.seq >= known.seq) runs.set(s.run_id, s);
    }
    schedule();
  }

  new LiveSocket("/ws/runs", {
    onState: showConnection,
    onFrame(frame) {
      if (frame.type === "index") {
        clock.observe(frame.server_ts);
        take(frame.runs);
      } else if (frame.type === "runs") {
        take(frame.runs);
      } else if (frame.type === "error") {
        console.error("livestats: the gateway refused a message", frame);
      }
    },
  }).start();
  // Elapsed times move on their own.
  setInterval(() => runs.size && schedule(), 1000);
}
