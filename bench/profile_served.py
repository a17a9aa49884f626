#!/usr/bin/env python3
"""Where a served request's CPU goes: a sampling profile (py-spy) of the real server process
under wrk, for one stack and variant, summarised by layer and by function.

    bench/.venv-bench/bin/python bench/profile_served.py --stack asgi --variant stub
    bench/.venv-bench/bin/python bench/profile_served.py --stack wsgi --variant ours --seconds 8

Starts the fast collector, the server exactly as ``bench/run.py`` does (uvicorn httptools +
uvloop with Starlette; gunicorn gthread 8 threads with Flask), loads it with wrk and
``bench/load.lua`` (browser-like requests from 2,000 visitors) and samples the server's
processes with ``py-spy record --nonblocking --subprocesses --gil`` (the process is never
paused; only the thread holding the GIL is sampled, so gunicorn's waiting threads and the
time in system calls do not count: the shares are of the Python work).
Prints (and with ``--out`` writes) the share of on-CPU samples per layer (server, framework,
our request path, our delivery, httpx, json, ...) and the top functions, self and inclusive.
py-spy comes from PyPI (``pip install py-spy``); sampling needs ptrace (root, or
``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import DEFAULT_OURS_OPTIONS, app_service  # noqa: E402
from bench.servers import CollectorProcess, ProcessTree, free_port  # noqa: E402
from bench.wrk import LoadSpec, run_wrk  # noqa: E402

__all__ = ["LAYERS", "layer_of", "main", "summarize"]

#: (layer, substrings of a frame's "function (file)" that put it there), first match wins,
#: looked up from the innermost frame outwards (so a frame of ours called by Starlette is ours).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "ours: journal",
        ("matomo_tracking/journal", "matomo_tracking/spool", "_journaling", "sqlite3/"),
    ),
    (
        "ours: delivery",
        (
            "matomo_asgi/dispatcher",
            "matomo_asgi/posting",
            "matomo_asgi/lean_posting",
            "matomo_wsgi/dispatcher",
            "matomo_wsgi/executor",
            "matomo_wsgi/poster",
            "matomo_tracking/delivery",  # delivery.py and delivery_queue.py
            "matomo_tracking/answers",
            "wire.py",
        ),
    ),
    ("ours: request path", ("matomo_tracking/", "matomo_asgi/", "matomo_wsgi/")),
    ("httpx/httpcore/h11/anyio", ("httpx/", "httpcore/", "h11/", "anyio/", "sniffio")),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("app framework", ("starlette/", "flask/", "werkzeug/", "jinja2", "bench/apps/")),
    ("server", ("uvicorn/", "gunicorn/", "httptools", "uvloop", "h11_impl")),
    ("asyncio", ("asyncio/",)),
    ("threading/queue", ("threading.py", "queue.py", "concurrent/", "selectors.py")),
)


def layer_of(stack: list[str]) -> str:
    """The layer of a sample: the innermost frame that names one (else ``other``)."""
    for frame in reversed(stack):
        for name, needles in LAYERS:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def summarize(raw: str, top: int = 25) -> dict[str, object]:
    """Layers and functions of py-spy's ``--format raw`` output (collapsed stacks)."""
    layers: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack_text.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        layers[layer_of(frames)] += count
        self_time[_short(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            inclusive[name] += count

    def share(counter: collections.Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / max(1, total), 1)) for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "layers_pct": share(layers, len(layers)),
        "self_pct": share(self_time, top),
        "inclusive_pct": share(inclusive, top),
    }


def _short(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)" keeping two path parts
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def profile(stack: str, variant: str, seconds: float, rate: int) -> tuple[dict[str, object], str]:
    """Serve ``stack``/``variant``, load it for ``seconds`` and sample it; (summary, raw)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        logs = Path(tmp)
        collector = CollectorProcess(port=free_port(), log_path=logs / "collector.log")
        collector.start()
        options = dict(DEFAULT_OURS_OPTIONS)
        if variant in ("spool", "external"):  # ours with a journal
            options["spool"] = str(logs / "matomo-spool.sqlite3")
        if variant == "external":  # the app only journals (no sender runs: not profiled)
            options["sender"] = "external"
        server = app_service(
            stack,
            "ours" if variant in ("spool", "external") else variant,
            collector.url,
            options,
            logs / "server.log",
        )
        try:
            server.start()
            run_wrk(server.base_url, LoadSpec(duration=1.0))  # warm up
            out = logs / "profile.txt"
            command = [
                spy,
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
                "--subprocesses",
                "--full-filenames",
                "--gil",
            ]
            tree = ProcessTree(server.pid)
            cpu_before = tree.cpu_times()
            load: dict[str, object] = {}
            loader = threading.Thread(
                target=lambda: load.update(
                    run_wrk(server.base_url, LoadSpec(duration=seconds + 1.0))
                )
            )
            loader.start()
            time.sleep(0.5)
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            loader.join()
            cpu_after = tree.cpu_times()
            cpu = sum(cpu_after) - sum(cpu_before)
            user = cpu_after[0] - cpu_before[0]
            if done.returncode != 0 or not out.exists():
                raise SystemExit(f"py-spy failed: {done.stderr[-2000:]}")
            raw = out.read_text()
        finally:
            server.stop()
            collector.stop()
    summary = summarize(raw)
    requests = int(str(load.get("requests", 0) or 0))
    # py-spy samples the GIL holder, also while it waits for a core: its shares are of the
    # Python work; the µs are those shares of the user CPU per request.
    cpu_us = user / max(1, requests) * 1e6
    summary["layers_us"] = [
        (name, round(pct / 100 * cpu_us, 1))
        for name, pct in summary["layers_pct"]  # type: ignore[attr-defined]
    ]
    summary.update(
        stack=stack,
        variant=variant,
        req_per_s=load.get("req_per_s"),
        cpu_us_per_req=round(cpu / max(1, requests) * 1e6, 1),
        user_us_per_req=round(cpu_us, 1),
        note="CPU per request includes py-spy's sampling overhead (nonblocking, small)",
    )
    return summary, raw


def _text(summary: dict[str, object]) -> str:
    lines = [
        f"## {summary['stack']} / {summary['variant']}: {summary['req_per_s']:,.0f} req/s under "
        f"py-spy, {summary['cpu_us_per_req']} µs CPU/request ({summary['user_us_per_req']} user), "
        f"{summary['samples']} samples",
        "",
        "layer (innermost frame that names one) | % of GIL-holding samples | user µs per request",
        "--- | --- | ---",
    ]
    us = dict(summary["layers_us"])  # type: ignore[call-overload]
    lines += [f"{k} | {v} | {us[k]}" for k, v in summary["layers_pct"]]  # type: ignore[attr-defined]
    lines += ["", "self % | function", "--- | ---"]
    lines += [f"{v} | {k}" for k, v in summary["self_pct"]]  # type: ignore[attr-defined]
    lines += ["", "inclusive % | function", "--- | ---"]
    lines += [f"{v} | {k}" for k, v in summary["inclusive_pct"]]  # type: ignore[attr-defined]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("asgi", "wsgi"), default="asgi")
    parser.add_argument(
        "--variant", choices=("bare", "stub", "ours", "spool", "external"), default="stub"
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=200, help="samples per second (200)")
    parser.add_argument("--out", type=Path, help="append the summary (Markdown) here")
    parser.add_argument("--raw", type=Path, help="write py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    summary, raw = profile(args.stack, args.variant, args.seconds, args.rate)
    text = _text(summary)
    print(text)
    if args.out is not None:
        with args.out.open("a") as handle:
            handle.write(text + "\n")
    if args.raw is not None:
        args.raw.write_text(raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
