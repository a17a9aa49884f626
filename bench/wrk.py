"""Drive wrk against a server on 127.0.0.1 and read its results.

The Lua script ``bench/load.lua`` alternates ``GET /items/<n>`` and ``GET /page`` and prints
one ``BENCH_JSON {...}`` line with exact counts and latency percentiles (microseconds);
``--latency`` is passed too, so wrk's own percentile table is kept in the raw output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SCRIPT", "LoadSpec", "WrkError", "run_wrk", "wrk_version"]

SCRIPT = Path(__file__).resolve().parent / "load.lua"
_MARK = "BENCH_JSON "


class WrkError(RuntimeError):
    """wrk failed or printed no result."""


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    """How hard and how long to load a server."""

    duration: float = 10.0
    threads: int = 2
    connections: int = 32
    timeout: float = 10.0


def wrk_version() -> str:
    """wrk's version line, or ``missing``."""
    path = shutil.which("wrk")
    if path is None:
        return "missing"
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "?"


def run_wrk(base_url: str, spec: LoadSpec) -> dict[str, Any]:
    """Load ``base_url`` for ``spec.duration`` seconds; the parsed result.

    Keys: ``requests``, ``duration_s``, ``req_per_s``, ``errors`` (connect, read, write,
    status, timeout), ``latency_ms`` (mean, stdev, max, p50, p90, p99, p999).
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("wrk is not installed (apt-get install wrk)")
    seconds = max(1, round(spec.duration))
    command = [
        wrk,
        f"-t{spec.threads}",
        f"-c{max(spec.connections, spec.threads)}",
        f"-d{seconds}s",
        f"--timeout={max(1, round(spec.timeout))}s",
        "--latency",
        "-s",
        str(SCRIPT),
        base_url,
    ]
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:  # run() kills wrk before raising
        raise WrkError(f"wrk did not finish within {seconds + 60} s") from exc
    return parse_wrk(out.stdout, out.stderr, out.returncode)


def parse_wrk(stdout: str, stderr: str = "", returncode: int = 0) -> dict[str, Any]:
    """The result in wrk's output (the script's ``BENCH_JSON`` line)."""
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            raw = json.loads(line[len(_MARK) :])
            break
    else:
        raise WrkError(
            f"wrk printed no result (exit {returncode}): {stdout[-800:]} {stderr[-800:]}"
        )
    duration_s = raw["duration_us"] / 1e6
    latency = {key: value / 1000 for key, value in raw["latency_us"].items()}
    return {
        "requests": raw["requests"],
        "duration_s": duration_s,
        "req_per_s": raw["requests"] / duration_s if duration_s > 0 else 0.0,
        "errors": raw["errors"],
        "latency_ms": latency,
        "bytes": raw["bytes"],
    }
