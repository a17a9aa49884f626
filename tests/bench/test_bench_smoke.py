"""Smoke test of the benchmark harness: ``bench/run.py`` runs end to end in its quickest mode
and writes its results. Never asserts on timings, only on the shape of what was written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, require_command

pytestmark = pytest.mark.e2e

MEASURED = (
    "req_per_s",
    "requests",
    "latency_ms",
    "errors",
    "cpu_us_per_req",
    "cpu_load_us_per_req",
    "cpu_drain_us_per_req",
    "peak_rss_mb",
    "rss_growth_mb",
    "served",
    "delivered_hits",
    "delivered_ratio",
)
MICRO = ("asgi_overhead", "tricks", "wsgi_overhead", "asyncio_dispatcher", "thread_dispatcher")


def test_quick_run_writes_results(tmp_path: Path) -> None:
    require_command("wrk")
    results = tmp_path / "results"
    command = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--no-venv",
        "--quick",
        "--scenarios=0ms",
        "--variants=bare,noop,stub,ours,external",
        "--runs=1",
        "--duration=1",
        "--warmup=0",
        "--settle=5",
        f"--results-dir={results}",
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    data = json.loads((results / "latest.json").read_text())
    for key in ("machine", "config", "servers", "measurements", "summary", "micro", "targets"):
        assert key in data, key
    for key in ("cpu_model", "cores", "python", "packages", "wrk"):
        assert key in data["machine"], key

    seen = {(m["stack"], m["variant"]): m for m in data["measurements"]}
    variants = ("bare", "noop", "stub", "ours", "external")
    assert set(seen) == {(s, v) for s in ("asgi", "wsgi") for v in variants}
    for (stack, variant), m in seen.items():
        assert "error" not in m, f"{stack} {variant}: {m.get('error')}"
        for key in MEASURED:
            assert key in m, f"{stack} {variant}: {key}"
        assert {"p50", "p99"} <= set(m["latency_ms"])
        if variant in ("ours", "external"):
            assert isinstance(m["delivered_ratio"], float)
            assert "dispatcher_stats" in m
        if variant == "external":  # the sender's CPU apart from the server's
            assert isinstance(m["sender_cpu_us_per_req"], float)
            assert m["sender_cpu_us_per_req"] > 0
            assert m["delivered_hits"] > 0  # the sender delivered from the journal
        else:
            assert m["sender_cpu_us_per_req"] is None
        if variant == "stub":  # our request path ran, one hit per request, none delivered
            assert m["dispatcher_stats"]["queued"] >= m["requests"]
            assert m["delivered_ratio"] is None
        if variant == "noop":  # a wrapped app, no tracking at all
            assert "dispatcher_stats" not in m
            assert m["requests"] > 0

    assert {(r["stack"], r["variant"]) for r in data["summary"]} == set(seen)
    for row in data["summary"]:
        assert "ratio_to_bare" in row
        assert "p99_delta_ms" in row

    for name in MICRO:
        assert name in data["micro"], name
        assert "error" not in data["micro"][name], data["micro"][name]

    report = (results / "latest.md").read_text()
    for heading in ("## ASGI", "## WSGI", "## Targets"):
        assert heading in report
    assert len(list(results.glob("2*.json"))) == 1
