"""Summaries, target checks and the Markdown report of a benchmark run."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

__all__ = ["TARGETS", "check_targets", "markdown", "summarize"]

#: Scenarios where our middleware must keep the app's throughput and tail latency.
THROUGHPUT_SCENARIOS = ("0ms", "50ms", "500ms", "down")
#: Scenarios after which every hit must have been delivered.
DELIVERY_SCENARIOS = ("0ms", "50ms", "500ms", "outage")

TARGETS = {
    "asgi_req_ratio": 0.75,
    "wsgi_req_ratio": 0.92,
    # The server's CPU per tracked request over the bare app's, delivery included (µs).
    "asgi_cpu_delta_us": 25.0,
    "wsgi_cpu_delta_us": 75.0,
    # ``spool=`` + ``sender="external"``: the server only journals (the sender's CPU apart).
    "external_asgi_req_ratio": 0.85,
    "external_wsgi_req_ratio": 0.95,
    "external_asgi_cpu_delta_us": 12.0,
    "external_wsgi_cpu_delta_us": 12.0,
    "p99_delta_ms": 1.0,
    "delivered_ratio": 1.0,
    "dispatcher_hits_per_s": 20_000.0,
    "soak_rss_growth_mb": 50.0,
}


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (stack, scenario, variant) over the runs, and ratios to the bare app of
    the same run (the median of the per-run ratios)."""
    ok = [m for m in measurements if "error" not in m]
    bare = {(m["stack"], m["scenario"], m["run"]): m for m in ok if m["variant"] == "bare"}
    keys: list[tuple[str, str, str]] = []
    for m in measurements:
        key = (m["stack"], m["scenario"], m["variant"])
        if key not in keys:
            keys.append(key)
    rows = []
    for stack, scenario, variant in keys:
        runs = [
            m for m in ok if (m["stack"], m["scenario"], m["variant"]) == (stack, scenario, variant)
        ]
        errors = [
            m["error"]
            for m in measurements
            if (m["stack"], m["scenario"], m["variant"]) == (stack, scenario, variant)
            and "error" in m
        ]
        ratios, p99_deltas, cpu_deltas = [], [], []
        for m in runs:
            base = bare.get((stack, scenario, m["run"]))
            if base is not None and base["req_per_s"]:
                ratios.append(m["req_per_s"] / base["req_per_s"])
                p99_deltas.append(m["latency_ms"]["p99"] - base["latency_ms"]["p99"])
                cpu_deltas.append(m["cpu_us_per_req"] - base["cpu_us_per_req"])
        delivered = [m["delivered_ratio"] for m in runs if m.get("delivered_ratio") is not None]
        rows.append(
            {
                "stack": stack,
                "scenario": scenario,
                "variant": variant,
                "runs": len(runs),
                "errors": errors,
                "req_per_s": _median(m["req_per_s"] for m in runs),
                "ratio_to_bare": _median(ratios),
                "p50_ms": _median(m["latency_ms"]["p50"] for m in runs),
                "p99_ms": _median(m["latency_ms"]["p99"] for m in runs),
                "p99_delta_ms": _median(p99_deltas),
                "cpu_us_per_req": _median(m["cpu_us_per_req"] for m in runs),
                "cpu_load_us_per_req": _median(m.get("cpu_load_us_per_req") for m in runs),
                "cpu_drain_us_per_req": _median(m.get("cpu_drain_us_per_req") for m in runs),
                "cpu_delta_us": _median(cpu_deltas),
                "sender_cpu_us_per_req": _median(m.get("sender_cpu_us_per_req") for m in runs),
                "peak_rss_mb": _median(m["peak_rss_mb"] for m in runs),
                "rss_growth_mb": _median(m["rss_growth_mb"] for m in runs),
                "delivered_ratio": _median(delivered),
                "delivered_ratio_min": min(delivered) if delivered else None,
                "http_errors": sum(sum(m["errors"].values()) for m in runs),
            }
        )
    return rows


def check_targets(
    summary: list[dict[str, Any]], soak: list[dict[str, Any]], micro: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per target that this run measured: what was asked, what was seen, pass."""
    checks: list[dict[str, Any]] = []

    def add(name: str, target: str, value: float | None, passed: bool | None) -> None:
        checks.append({"name": name, "target": target, "value": value, "pass": passed})

    for row in summary:
        if row["variant"] not in ("ours", "external"):
            continue
        stack, scenario = row["stack"], row["scenario"]
        prefix = "external_" if row["variant"] == "external" else ""
        label = f"{stack} {scenario}" + (" external" if prefix else "")
        if row["errors"] and row["runs"] == 0:
            add(f"{label}: runs", "no errors", None, False)
            continue
        if scenario in THROUGHPUT_SCENARIOS:
            floor = TARGETS[f"{prefix}{stack}_req_ratio"]
            ratio = row["ratio_to_bare"]
            add(
                f"{label}: req/s vs bare",
                f">= {floor:.0%}",
                ratio,
                None if ratio is None else ratio >= floor,
            )
            cpu = row["cpu_delta_us"]
            ceiling = TARGETS[f"{prefix}{stack}_cpu_delta_us"]
            add(
                f"{label}: server CPU - bare (µs/req)",
                f"<= {ceiling:g} µs",
                cpu,
                None if cpu is None else cpu <= ceiling,
            )
        if scenario in DELIVERY_SCENARIOS:
            low = row["delivered_ratio_min"]
            add(
                f"{label}: delivered / requests (worst run)",
                "100%",
                low,
                None if low is None else low >= TARGETS["delivered_ratio"],
            )
    for kind in ("asyncio_dispatcher", "thread_dispatcher"):
        part = micro.get(kind)
        if part is None:
            continue
        rate = part.get("hits_per_s")
        add(
            f"{kind}: hits/s from one process",
            f">= {TARGETS['dispatcher_hits_per_s']:,.0f}",
            rate,
            None if rate is None else rate >= TARGETS["dispatcher_hits_per_s"],
        )
    for entry in soak:
        growth = entry.get("rss_growth_mb")
        add(
            f"{entry['stack']} soak ({entry.get('duration_s', '?')} s outage): RSS growth (MB)",
            f"<= {TARGETS['soak_rss_growth_mb']:g} MB",
            growth,
            None if growth is None else growth <= TARGETS["soak_rss_growth_mb"],
        )
    return checks


def _fmt(value: Any, spec: str = ",.0f", suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{suffix}"


def markdown(data: dict[str, Any]) -> str:
    """The run as Markdown: machine, settings, one table per stack, soak, micro, targets."""
    machine, config = data["machine"], data["config"]
    lines = [
        f"# Benchmark results ({data['started']})",
        "",
        f"- Machine: {machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['memory_gb']} GB, {machine['os']}",
        f"- Python {machine['python']}; load average at start {machine['loadavg_start']}, "
        f"at end {data.get('loadavg_end', '-')}",
        f"- Packages: {', '.join(f'{k} {v}' for k, v in machine['packages'].items())}",
        f"- wrk: {machine['wrk']}; project commit {machine['git']}",
        f"- Servers: ASGI `{data['servers']['asgi']}`; WSGI `{data['servers']['wsgi']}`",
        f"- Load: {config['runs']} run(s) x {config['duration']} s per scenario after "
        f"{config['warmup']} s warm-up, wrk -t{config['threads']} -c{config['connections']}, "
        "alternating /items/{n} and /page",
        f"- Our middleware's options: `{config['ours_options']}`; outage: collector down "
        f"{config['outage_down']} s mid-run",
        "",
    ]
    if data.get("skipped"):
        lines += ["Skipped: " + "; ".join(data["skipped"]), ""]
    header = (
        "| scenario | variant | req/s | vs bare | p50 ms | p99 ms | p99 - bare | "
        "CPU µs/req (load + drain) | CPU - bare | sender CPU | peak RSS MB | delivered |"
    )
    for stack in ("asgi", "wsgi"):
        rows = [r for r in data["summary"] if r["stack"] == stack]
        if not rows:
            continue
        lines += [f"## {stack.upper()}", "", header, "|" + " --- |" * 12]
        for r in rows:
            if r["runs"] == 0:
                error = (r["errors"] or ["?"])[0].splitlines()[0][:120]
                lines.append(f"| {r['scenario']} | {r['variant']} | error: {error} |" + " |" * 9)
                continue
            lines.append(
                f"| {r['scenario']} | {r['variant']} | {_fmt(r['req_per_s'])} "
                f"| {_fmt(r['ratio_to_bare'], '.1%')} | {_fmt(r['p50_ms'], '.2f')} "
                f"| {_fmt(r['p99_ms'], '.2f')} | {_fmt(r['p99_delta_ms'], '+.2f')} "
                f"| {_fmt(r['cpu_us_per_req'], ',.0f')} ({_fmt(r['cpu_load_us_per_req'], ',.0f')}"
                f" + {_fmt(r['cpu_drain_us_per_req'], ',.0f')}) "
                f"| {_fmt(r['cpu_delta_us'], '+,.0f')} "
                f"| {_fmt(r['sender_cpu_us_per_req'], ',.0f')} "
                f"| {_fmt(r['peak_rss_mb'], '.1f')} "
                f"| {_fmt(r['delivered_ratio'], '.1%')} |"
            )
        lines.append("")
    if data.get("soak"):
        lines += [
            "## Outage soak (ours, Matomo down for the whole load)",
            "",
            "| stack | seconds | req/s | RSS before MB | peak RSS MB | growth MB "
            "| delivered after |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in data["soak"]:
            if "error" in s:
                lines.append(
                    f"| {s['stack']} | error: {s['error'].splitlines()[0][:120]} |" + " |" * 5
                )
                continue
            lines.append(
                f"| {s['stack']} | {s['duration_s']} | {_fmt(s['req_per_s'])} "
                f"| {_fmt(s['baseline_rss_mb'], '.1f')} | {_fmt(s['peak_rss_mb'], '.1f')} "
                f"| {_fmt(s['rss_growth_mb'], '.1f')} | {_fmt(s['delivered_ratio'], '.1%')} |"
            )
        lines.append("")
    micro = data.get("micro") or {}
    if micro:
        lines += ["## Micro-benchmarks (in process)", "", "| what | result |", "| --- | --- |"]
        for name, part in micro.items():
            if "error" in part:
                text = "error: " + str(part["error"]).splitlines()[0][:150]
            elif name == "tricks":
                text = "; ".join(
                    f"{trick}: {v['trick_ns']:,} vs {v['plain_ns']:,} ns"
                    for trick, v in part.items()
                )
            elif "added_us" in part:
                text = (
                    f"bare {part['bare_us']:.2f} µs, ours {part['ours_us']:.2f} µs per request: "
                    f"**+{part['added_us']:.2f} µs** ({part['hits_per_request']} hit/request)"
                )
            else:
                text = (
                    f"**{part['hits_per_s']:,.0f} hits/s** ({part['delivered']:,} of "
                    f"{part['hits']:,} delivered in {part['seconds']:.2f} s)"
                )
            lines.append(f"| {name} | {text} |")
        lines.append("")
    if data.get("targets"):
        lines += ["## Targets", "", "| target | asked | measured | |", "| --- | --- | --- | --- |"]
        for t in data["targets"]:
            value = t["value"]
            shown = (
                "-"
                if value is None
                else (f"{value:.1%}" if "%" in t["target"] else f"{value:,.2f}")
            )
            verdict = {True: "pass", False: "**FAIL**", None: "-"}[t["pass"]]
            lines.append(f"| {t['name']} | {t['target']} | {shown} | {verdict} |")
        lines.append("")
    return "\n".join(lines)
