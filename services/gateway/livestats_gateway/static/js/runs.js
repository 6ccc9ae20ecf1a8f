// @ts-check
// The runs page: `/ws/runs` sends the newest runs (`index`), then each change (`runs`); per run
// the summary with the highest `seq` wins, so a late or repeated update never rolls a row back.
// Older runs come page by page from GET /api/runs (its cursor), when the reader scrolls to the
// end of the list or presses "Load older runs". Runs whose data expired leave the list: every
// PRUNE_MS the page asks the API again for the span it shows and drops the runs no longer there.
import { LiveSocket, clock } from "./conn.js";
import { isTerminal } from "./fold.js";
import { dateTime, duration, el, outcomeText, ownerLabel, percent, runElapsed } from "./format.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out", "stalled"];
const COLUMNS = [
  ["name", "Run"], ["status", "Status"], ["started", "Started"], ["duration", "Duration"], ["phase", "Phase"],
  ["progress", "Progress"], ["failed_attempts", "Failed attempts"], ["given_up", "Given up"], ["retries", "Retries"], ["owner", "Owner"],
];
const PAGE = 100; // runs per GET /api/runs page
const PRUNE_MS = 60_000;
const PRUNE_PAGES = 20; // at most this many pages per check

async function fetchPage(cursor) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (cursor) query.set("cursor", cursor);
  const answer = await fetch(`/api/runs?${query}`, { headers: { Accept: "application/json" } });
  if (!answer.ok) throw new Error(`GET /api/runs answered ${answer.status}`);
  return answer.json();
}

export function showRuns(view, me, showConnection) {
  const runs = new Map(); // run_id -> newest summary
  const params = new URLSearchParams(location.search);
  const filter = el("select", { id: "status-filter", "data-testid": "status-filter" },
    el("option", { value: "", text: "all statuses" }),
    ...STATUSES.map((s) => el("option", { value: s, text: s })));
  filter.value = params.get("status") ?? "";
  const search = el("input", { type: "search", id: "runs-search", "data-testid": "runs-search", placeholder: "name, id or owner", value: params.get("q") ?? "" });
  const body = el("tbody");
  const empty = el("p", { class: "muted", "data-testid": "runs-empty", text: "No runs yet. Submit one: livestats submit SPEC, or POST /api/runs." });
  const more = el("button", { type: "button", "data-testid": "runs-more", text: "Load older runs" });
  const moreNote = el("span", { class: "muted", "data-testid": "runs-count" });
  const table = el("table", { class: "runs", "data-testid": "runs-table" },
    el("thead", {}, el("tr", {}, ...COLUMNS.map(([, title]) => el("th", { scope: "col", text: title })))), body);
  view.replaceChildren(
    el("div", { class: "toolbar" }, el("h1", { text: "Runs", class: "title" }), el("span", { class: "spacer" }),
      el("label", { class: "muted", for: "runs-search", text: "Search" }), search,
      el("label", { class: "muted", for: "status-filter", text: "Show" }), filter),
    el("div", { class: "tablebox" }, table), empty,
    el("div", { class: "pager" }, more, moreNote));

  let cursor = null; // where the next older REST page starts
  let exhausted = false; // the REST pages reached the end of the index
  let loading = false;

  function updateUrl() {
    const url = new URL(location.href);
    for (const [key, value] of [["status", filter.value], ["q", search.value.trim()]]) {
      if (value) url.searchParams.set(key, value);
      else url.searchParams.delete(key);
    }
    history.replaceState(null, "", url);
    render();
  }
  filter.addEventListener("change", updateUrl);
  search.addEventListener("input", updateUrl);

  async function loadOlder() {
    if (loading || exhausted) return;
    loading = true;
    more.disabled = true;
    try {
      // The live index already holds the newest runs: page on until a page brings some we lack.
      for (let added = 0; added === 0 && !exhausted;) {
        const page = await fetchPage(cursor);
        cursor = page.next;
        exhausted = cursor === null;
        added = page.runs.filter((r) => !runs.has(r.run_id)).length;
        take(page.runs);
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (/answered 401\b/.test(message)) {
        // The session ended (logout, revocation, another login): no point asking again.
        exhausted = true;
        moreNote.textContent = "Your session ended: log in again to load older runs.";
      } else {
        console.error("livestats: loading older runs failed", err);
        moreNote.textContent = `Loading older runs failed: ${message}`;
      }
    } finally {
      loading = false;
      more.disabled = false;
      schedule();
    }
  }
  more.addEventListener("click", loadOlder);
  // Infinite scroll: while the end of the list is in view, the next page loads (after each
  // render too, so a screen the first runs do not fill is filled).
  let moreInView = false;
  new IntersectionObserver((entries) => {
    moreInView = entries.some((e) => e.isIntersecting);
    if (moreInView && runs.size) loadOlder();
  }).observe(more);

  async function prune() {
    if (!runs.size) return;
    const oldest = Math.min(...[...runs.values()].map((r) => r.created_ts ?? Infinity));
    const present = new Set();
    let next = null;
    let reached = false;
    for (let n = 0; n < PRUNE_PAGES && !reached; n++) {
      const page = await fetchPage(next);
      for (const r of page.runs) present.add(r.run_id);
      next = page.next;
      reached = next === null || page.runs.some((r) => (r.created_ts ?? 0) < oldest);
    }
    if (!reached) return; // not sure of the whole span: drop nothing
    let dropped = 0;
    for (const [id, r] of runs) {
      if (!present.has(id) && isTerminal(r.status)) {
        runs.delete(id);
        dropped += 1;
      }
    }
    if (dropped) schedule();
  }
  setInterval(() => prune().catch((err) => console.error("livestats: checking for expired runs failed", err)), PRUNE_MS);

  function cellOf(field, ...content) {
    const title = COLUMNS.find(([f]) => f === field)?.[1] ?? field;
    return el("td", { "data-field": field, "data-label": title }, ...content);
  }

  function row(run) {
    const now = clock.now();
    const reason = outcomeText(run);
    return el("tr", { "data-run-id": run.run_id, "data-status": run.status },
      cellOf("name", el("a", { href: `/runs/${encodeURIComponent(run.run_id)}`, text: run.name || run.run_id }),
        el("div", { class: "muted mono", text: run.run_id })),
      cellOf("status", el("span", { class: "status", "data-status": run.status, text: run.status }),
        el("div", { class: "muted small", "data-field": "reason", text: isTerminal(run.status) ? reason : "" })),
      cellOf("started", el("span", { class: "num", text: dateTime(run.started_ts ?? run.created_ts) })),
      cellOf("duration", el("span", { class: "num", text: duration(runElapsed(run, now)) })),
      cellOf("phase", run.current_phase ?? "—"),
      cellOf("progress", el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: { width: `${percent(run.calls_done, run.planned_calls)}%` } })),
        el("span", { class: "num", text: `${run.calls_done} / ${run.planned_calls}` })),
      cellOf("failed_attempts", el("span", { class: "num", text: String(run.failed_attempts) })),
      cellOf("given_up", el("span", { class: "num", text: String(run.calls_given_up) })),
      cellOf("retries", el("span", { class: "num", text: String(run.retries) })),
      cellOf("owner", ownerLabel(run.owner)));
  }

  function matches(run, words) {
    if (filter.value && run.status !== filter.value) return false;
    if (!words.length) return true;
    const hay = `${run.name} ${run.run_id} ${ownerLabel(run.owner)} ${run.team ?? ""}`.toLowerCase();
    return words.every((w) => hay.includes(w));
  }

  let scheduled = false;
  function render() {
    scheduled = false;
    const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const shown = [...runs.values()].filter((r) => matches(r, words)).sort((a, b) => (b.created_ts ?? 0) - (a.created_ts ?? 0));
    body.replaceChildren(...shown.map(row));
    empty.hidden = shown.length > 0;
    empty.textContent = runs.size ? "No run matches the search and the filter." : "No runs yet. Submit one: livestats submit SPEC, or POST /api/runs.";
    more.hidden = exhausted;
    if (moreInView && runs.size && !exhausted && !loading) loadOlder();
    if (!loading) moreNote.textContent = `${shown.length} of ${runs.size} loaded runs shown${exhausted ? " (all runs loaded)" : ""}`;
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
  // Durations of running runs move on their own.
  setInterval(() => runs.size && schedule(), 1000);
}
