"""The results as a Markdown table (printed, written next to the JSON, shown in the README),
with the ratios of livestats to each alternative and the targets of issue 8."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .suite import DESIGNS, LABELS

Get = Callable[[dict[str, Any], str], Any]


def _fmt(value: Any, spread: Any = None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    if spread and spread[0] != spread[1]:
        text += f" ({_fmt(spread[0], None, 2)}-{_fmt(spread[1], None, 2)})"
    return text


def _cell(section: dict[str, Any] | None, key: str) -> str:
    if not section or key not in section:
        return "n/a"
    return _fmt(section[key], section.get(key + "_spread"))


def rows(r: dict[str, Any]) -> list[tuple[str, dict[str, str], str]]:
    """(metric, cell per design, target) rows."""

    def per(section: str, key: str, sub: str | None = None) -> dict[str, str]:
        data = r.get(section, {})
        return {d: _cell(data.get(d, {}).get(sub) if sub else data.get(d), key) for d in DESIGNS}

    out = [
        ("latency p50 ms (1,000 ev/s, 100 clients)", per("latency", "p50_ms"), ""),
        ("latency p99 ms", per("latency", "p99_ms"), "<= 10"),
        ("latency max ms", per("latency", "max_ms"), ""),
        ("delivered events/s (1,000 clients, 10 runs)", per("fanout", "delivered_per_s"), ">= 100,000"),
        ("server CPU, cores (fan-out)", per("fanout", "server_cpu"), ""),
        ("server CPU µs per delivered event (fan-out)", per("fanout", "server_cpu_us_per_delivered"), ""),
        ("load-generator CPU, cores (fan-out)", per("fanout", "client_cpu"), ""),
    ]
    for n in ("1", "100", "1000"):
        cells = per("commands", "commands_per_published", n)
        out.append((f"Redis commands per published event, {n} client(s) on a run", cells, "flat"))
    for n in ("1", "100", "1000"):
        out.append(
            (f"Redis commands per delivered event, {n} client(s)", per("commands", "commands_per_delivered", n), "")
        )
    out += [
        ("replay 100,000 events: history s", per("replay", "history_s"), ""),
        ("replay: first live event s", per("replay", "first_live_s"), "<= 1"),
        ("ingest events/s (one process)", per("ingest", "events_per_s"), ">= 30,000"),
        ("ingest CPU µs per event (publishing process)", per("ingest", "cpu_us_per_event"), ""),
        ("record call p50 µs (caller side)", per("ingest", "call_p50_us"), ""),
        ("record call p99 µs", per("ingest", "call_p99_us"), ""),
        ("RSS KB per idle connection (1,000)", per("memory", "kb_per_conn"), "<= 30"),
    ]
    ack = r.get("replica_ack")
    if ack:
        for key, name in (
            ("p50_ms", "awaited publish p50 ms: acknowledgement off / WAIT for 1 replica"),
            ("p99_ms", "awaited publish p99 ms: off / WAIT"),
            ("events_per_s", "emitted events/s (one publisher): off / WAIT"),
        ):
            cells = dict.fromkeys(DESIGNS, "n/a")
            cells["livestats"] = f"{_fmt(ack['off'][key])} / {_fmt(ack['on'][key])}"
            out.append((name, cells, ""))
    soak = r.get("soak")
    if soak:
        cells = dict.fromkeys(DESIGNS, "n/a")
        history = f", history {soak['history_cap']:,}" if soak.get("history_cap") else ", histories growing"
        cells["livestats"] = f"{soak['growth_pct']:+.1f}% ({soak['duration_s']:.0f} s{history})"
        out.append(("RSS growth over the soak, after warm-up", cells, "<= 5%"))
    return out


def ratios(r: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """How many times better livestats is than each alternative (>1: livestats wins)."""

    def ratio(section: str, key: str, higher_is_better: bool, sub: str | None = None) -> dict[str, str]:
        data = r.get(section, {})

        def value(d: str) -> Any:
            node = data.get(d, {})
            node = node.get(sub, {}) if sub else node
            return node.get(key)

        ours = value("livestats")
        cells = {}
        for d in DESIGNS[:-1]:
            theirs = value(d)
            if ours is None or theirs is None or not ours or not theirs:
                cells[d] = "n/a"
            else:
                cells[d] = f"{(ours / theirs if higher_is_better else theirs / ours):,.1f}x"
        return cells

    return [
        ("latency p99: theirs / ours", ratio("latency", "p99_ms", False)),
        ("delivered events/s: ours / theirs", ratio("fanout", "delivered_per_s", True)),
        (
            "commands per delivered event (1,000 clients): theirs / ours",
            ratio("commands", "commands_per_delivered", False, "1000"),
        ),
    ]


def process_rows(r: dict[str, Any]) -> list[str]:
    """The gateway-processes case as its own table: one column per process count."""
    data = r.get("processes")
    if not data:
        return []
    counts = sorted(data, key=int)

    def row(name: str, case: str, key: str) -> str:
        return f"| {name} | " + " | ".join(_cell(data[c].get(case), key) for c in counts) + " |"

    def offered(c: str) -> str:
        fan = data[c]["fanout"]
        want = fan.get("published_per_s", 0) * 100  # every event of a run goes to its 100 clients
        return f"{fan['delivered_per_s'] / want:.0%}" if want else "n/a"

    def spread(c: str) -> str:
        queued = data[c]["fanout"].get("events_queued_by_process", [])
        total = sum(queued)
        return " / ".join(f"{q / total:.0%}" for q in queued) if total else "n/a"

    def scale(case: str, key: str, higher_is_better: bool) -> str:
        first, last = data[counts[0]].get(case, {}).get(key), data[counts[-1]].get(case, {}).get(key)
        if not first or not last or len(counts) < 2:
            return "n/a"
        return f"{(last / first if higher_is_better else first / last):.2f}x"

    lines = [
        "",
        "| gateway processes | " + " | ".join(counts) + " |",
        "|---|" + "---|" * len(counts),
        row("delivered events/s (1,000 clients, 10 runs)", "fanout", "delivered_per_s"),
        "| delivered / offered (fan-out) | " + " | ".join(offered(c) for c in counts) + " |",
        row("server CPU, cores (all processes, fan-out)", "fanout", "server_cpu"),
        row("server CPU µs per delivered event", "fanout", "server_cpu_us_per_delivered"),
        row("load-generator CPU, cores (2 processes, fan-out)", "fanout", "client_cpu"),
        row("clients closed (fan-out)", "fanout", "closed"),
        "| events queued by each process (fan-out) | " + " | ".join(spread(c) for c in counts) + " |",
        row("latency p50 ms (1,000 ev/s, 100 clients)", "latency", "p50_ms"),
        row("latency p99 ms", "latency", "p99_ms"),
        f"| {counts[-1]} vs {counts[0]}: delivered/s, p99 | {scale('fanout', 'delivered_per_s', True)}, "
        f"{scale('latency', 'p99_ms', False)} |" + " |" * (len(counts) - 1),
    ]
    return lines


def markdown(result: dict[str, Any]) -> str:
    r = result["results"]
    m = result["machine"]
    head = "| metric | " + " | ".join(LABELS[d] for d in DESIGNS) + " | target |"
    lines = [
        f"`{result['command']}` on {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['server']}, "
        f"commit {m['commit']}, {result['started']}; median of {result['settings']['reps']} runs (min-max).",
        "",
        head,
        "|" + "---|" * (len(DESIGNS) + 2),
    ]
    for name, cells, target in rows(r):
        lines.append(f"| {name} | " + " | ".join(cells[d] for d in DESIGNS) + f" | {target} |")
    lines += ["", "| livestats vs | " + " | ".join(LABELS[d] for d in DESIGNS[:-1]) + " |", "|---|---|---|---|"]
    for name, cells in ratios(r):
        lines.append(f"| {name} | " + " | ".join(cells[d] for d in DESIGNS[:-1]) + " |")
    lines += process_rows(r)
    return "\n".join(lines) + "\n"
