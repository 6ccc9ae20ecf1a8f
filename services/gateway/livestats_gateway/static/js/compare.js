// @ts-check
// The compare page: models per phase across runs (GET /api/compare), the estimator's
// calibration over the same runs (GET /api/calibration), and the price table (GET /api/prices).
// The filters live in the URL, so a comparison can be shared as a link.
import { el } from "./format.js";

const FILTERS = ["tag", "name", "owner", "since", "until"];

/** @param {number | null | undefined} v @param {number} digits */
function num(v, digits = 1) {
  return v === null || v === undefined ? "—" : v.toFixed(digits);
}

/** @param {number | null | undefined} usd */
function money(usd) {
  if (usd === null || usd === undefined) return "unknown";
  return usd >= 0.01 ? `$${usd.toFixed(2)}` : `$${usd.toPrecision(3)}`;
}

/** @param {string[]} heads @param {Array<Array<string>>} rows @param {string} testid */
function table(heads, rows, testid) {
  return el(
    "div", { class: "scroll-x" },
    el("table", { class: "runs", "data-testid": testid },
      el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c, i) => el("td", { class: i > 1 ? "num" : "", text: c })))))),
  );
}

/** @param {URLSearchParams} params */
function filterForm(params) {
  const inputs = FILTERS.map((name) => {
    const input = el("input", { name, id: `f-${name}`, value: params.get(name) ?? "", placeholder: name === "since" || name === "until" ? "epoch ms" : "" });
    return el("label", { for: `f-${name}` }, `${name} `, input);
  });
  const runs = el("input", { name: "run", id: "f-run", value: params.getAll("run").join(" "), placeholder: "run ids, space-separated" });
  const form = el("form", { class: "filters", "data-testid": "compare-filters" }, ...inputs,
    el("label", { for: "f-run" }, "runs ", runs), el("button", { type: "submit", text: "Compare" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const name of FILTERS) {
      const value = /** @type {HTMLInputElement} */ (form.querySelector(`[name=${name}]`)).value.trim();
      if (value) next.set(name, value);
    }
    for (const id of runs.value.split(/\s+/).filter(Boolean)) next.append("run", id);
    location.search = next.toString();
  });
  return form;
}

/** @param {Response} answer */
async function json(answer) {
  if (!answer.ok) {
    const body = await answer.json().catch(() => ({ detail: answer.statusText }));
    throw new Error(`${answer.status}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`);
  }
  return answer.json();
}

/** @param {HTMLElement} view @param {(state: string) => void} showConnection */
export async function showCompare(view, showConnection) {
  showConnection("snapshot"); // a page of figures read once: no live socket
  const params = new URLSearchParams(location.search);
  const status = el("p", { class: "muted", "data-testid": "compare-status", text: "Loading…" });
  view.replaceChildren(el("h1", { text: "Compare models" }), filterForm(params), status);
  const query = params.toString();
  try {
    const [comparison, calibration, prices] = await Promise.all([
      fetch(`/api/compare?${query}`).then(json),
      fetch(`/api/calibration?${new URLSearchParams([...params].filter(([k]) => k !== "run")).toString()}`).then(json),
      fetch("/api/prices").then(json),
    ]);
    status.textContent = `${comparison.selection.runs_examined} runs compared.`;
    const rows = comparison.rows.map((/** @type {any} */ r) => [
      r.model, r.phase, String(r.runs), String(r.calls), `${num(r.success_rate)} %`, num(r.retries_per_call, 2),
      `${num(r.latency_p50_s, 2)} s`, `${num(r.latency_p95_s, 2)} s`, r.input_tokens.toLocaleString(), r.output_tokens.toLocaleString(),
      money(r.cost_per_success_usd) + (r.unpriced_attempts ? ` (${r.unpriced_attempts} unpriced)` : ""),
      r.mean_smape === null ? "—" : `${num(r.mean_smape)} %`, String(r.truncated_attempts),
    ]);
    const calibrated = calibration.strata.map((/** @type {any} */ s) => [s.stratum, String(s.samples), num(s.factor, 3),
      `${num(s.smape_before)} %`, `${num(s.smape_after)} %`]);
    const verdict = calibration.samples === 0 ? "No complete phases with a prediction among these runs."
      : `${calibration.samples} samples: SMAPE ${num(calibration.smape_before)} % raw, ${num(calibration.smape_after_cv)} % calibrated `
        + `(leave-one-out). ${calibration.improved ? "A real improvement" : "No significant improvement"}`
        + (calibration.sign_test_p === null ? "." : ` (sign test p = ${calibration.sign_test_p.toPrecision(2)}).`);
    const priced = Object.entries(prices.models).map(([model, versions]) => {
      const v = /** @type {any[]} */ (versions).at(-1);
      return [model, v.effective_from, `$${v.input_per_mtok}`, `$${v.output_per_mtok}`, v.cached_input_per_mtok === null ? "—" : `$${v.cached_input_per_mtok}`];
    });
    view.append(
      el("h2", { text: "Models by phase" }),
      rows.length ? table(["model", "phase", "runs", "calls", "success", "retries/call", "p50", "p95", "tokens in", "tokens out", "cost/success", "SMAPE", "truncated"], rows, "compare-table")
        : el("p", { class: "muted", "data-testid": "compare-empty", text: "No calls in the chosen runs." }),
      el("h2", { text: "Estimator calibration" }),
      el("p", { "data-testid": "calibration-verdict", text: verdict }),
      calibrated.length ? table(["stratum", "samples", "factor", "SMAPE raw", "SMAPE after"], calibrated, "calibration-table") : "",
      el("h2", { text: "Prices (USD per million tokens)" }),
      priced.length ? table(["model", "since", "input", "output", "cached input"], priced, "prices-table")
        : el("p", { class: "muted", text: "This gateway has no price table (LIVESTATS_PRICES_FILE); the costs above are what the workers recorded." }),
    );
  } catch (err) {
    status.className = "error";
    status.textContent = `Cannot compare: ${err instanceof Error ? err.message : err}`;
  }
}
