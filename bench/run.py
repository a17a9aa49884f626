#!/usr/bin/env python3
"""Benchmark matomo-middleware against the bare app and its peers: ``python3 bench/run.py``.

Creates ``bench/.venv-bench`` (the project, uvicorn[standard], gunicorn, starlette, flask,
psutil, asgi-matomo, flask-matomo2) on first use and re-runs itself there. Then, for ASGI
(Starlette on uvicorn) and WSGI (Flask on gunicorn gthread), bare / ours / peer, and each
scenario (Matomo answering in 0, 50, 500 ms, down, and an outage mid-run), it loads the app
with wrk, measures req/s, latency, CPU per request, peak RSS and hits delivered, and writes
``bench/results/<timestamp>.json``, ``latest.json`` and ``latest.md``. See bench/README.md.

    python3 bench/run.py                 the full benchmark (about 45 minutes)
    python3 bench/run.py --quick         a smoke test (about 2 minutes)
    python3 bench/run.py --help          every option
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import venv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata, util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv-bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.servers import (  # noqa: E402
    CollectorProcess,
    ProcessTree,
    RssSampler,
    Service,
    free_port,
    start_sender,
    stop_sender,
)
from bench.wrk import LoadSpec, run_wrk, wrk_version  # noqa: E402

#: What the benchmark venv holds besides the project itself (``-e .[asgi]``).
REQUIREMENTS = [
    "uvicorn[standard]",
    "gunicorn",
    "starlette",
    "flask",
    "psutil",
    "asgi-matomo==0.8.0",
    "flask-matomo2==0.7.0",
]
STACKS = ("asgi", "wsgi")
VARIANTS = ("bare", "noop", "stub", "ours", "peer", "spool", "external")
#: The variants run by default: ``spool`` (ours with ``spool=``, a journal in a temporary
#: directory) and ``external`` (``spool=`` and ``sender="external"``, with
#: ``matomo-middleware send`` delivering from the journal, its CPU counted apart) are asked
#: for with ``--variants``.
DEFAULT_VARIANTS = ("bare", "stub", "ours", "peer")
#: Our middleware, without and with a journal, and with the sender outside the app.
OURS = ("ours", "spool", "external")
SCENARIOS = ("0ms", "50ms", "500ms", "down", "outage", "outage60", "soak")
#: ``outage60``: Matomo refused for this many seconds in the middle of a load this much longer.
OUTAGE60_DOWN = 60.0
OUTAGE60_LOAD = 70.0
QUICK_SCENARIOS = ("0ms", "50ms", "down")
LATENCY_MS = {
    "0ms": 0.0,
    "50ms": 50.0,
    "500ms": 500.0,
    "down": 0.0,
    "outage": 0.0,
    "outage60": 0.0,
    "soak": 0.0,
}
PEER_MODULES = {"asgi": "asgi_matomo", "wsgi": "flask_matomo2"}
#: Our middleware's options in the benchmark. Only the backoff cap differs from the defaults:
#: with 60 s, the first retry after Matomo comes back may wait up to a minute, and the
#: harness would have to wait that long to count the delivered hits.
DEFAULT_OURS_OPTIONS: dict[str, Any] = {"backoff_max": 2.0}
PACKAGES = (
    "matomo-middleware",
    "httpx",
    "uvicorn",
    "httptools",
    "uvloop",
    "gunicorn",
    "starlette",
    "flask",
    "werkzeug",
    "asgi-matomo",
    "flask-matomo2",
    "matomo-core",
    "httpx2",
    "psutil",
)


# -- the benchmark venv ---------------------------------------------------------------------
def _venv_python() -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure_venv(reinstall: bool = False) -> Path:
    """Create/update ``bench/.venv-bench`` when the requirements or pyproject changed."""
    python = _venv_python()
    if reinstall and VENV.exists():
        shutil.rmtree(VENV)
    if not python.exists():
        print(f"creating {VENV.relative_to(ROOT)}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + "\n".join(REQUIREMENTS).encode()
    ).hexdigest()
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.read_text() == digest:
        return python
    print("installing the project and " + ", ".join(REQUIREMENTS), flush=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    for step in ([*pip, "--upgrade", "pip"], [*pip, "-e", f"{ROOT}[asgi]", *REQUIREMENTS]):
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            raise SystemExit(f"pip failed ({done.returncode}): {' '.join(step)}")
    stamp.write_text(digest)
    return python


# -- machine --------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python, package versions, wrk, git commit, load average."""
    cpu_model = platform.processor() or "?"
    memory_gb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "interpreter": sys.executable,
        "packages": packages,
        "wrk": wrk_version(),
        "git": _git_commit(),
        "loadavg_start": _loadavg(),
    }


def _git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return commit + (" (with uncommitted changes)" if dirty else "")


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


# -- servers --------------------------------------------------------------------------------
def server_flavour() -> tuple[str, str]:
    """uvicorn's ``--http`` and ``--loop``: httptools and uvloop when installed."""
    http = "httptools" if util.find_spec("httptools") else "h11"
    loop = "uvloop" if util.find_spec("uvloop") else "asyncio"
    return http, loop


def app_command(stack: str, port: int) -> list[str]:
    """The server command line for ``stack`` (the same for every variant)."""
    if stack == "asgi":
        http, loop = server_flavour()
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.apps.asgi_app:app",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--http={http}",
            f"--loop={loop}",
            "--no-access-log",
            "--log-level=warning",
            "--timeout-graceful-shutdown=5",
        ]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers=1",
        "--worker-class=gthread",
        "--threads=8",
        f"--bind=127.0.0.1:{port}",
        "--graceful-timeout=5",
        "--log-level=warning",
        "bench.apps.wsgi_app:app",
    ]


def app_service(
    stack: str, variant: str, matomo_url: str, options: dict[str, Any], log_path: Path
) -> Service:
    """A server for ``stack``'s benchmark app in ``variant`` on a free port (not started)."""
    port = free_port()
    env = {
        "BENCH_VARIANT": variant,
        "BENCH_MATOMO_URL": matomo_url,
        "BENCH_OPTIONS": json.dumps(options),
    }
    command = app_command(stack, port)
    return Service(f"{stack}-{variant}", command, port=port, log_path=log_path, env=env)


def server_description(stack: str) -> str:
    """The server command without ports and paths, for the report."""
    if stack == "asgi":
        http, loop = server_flavour()
        return f"uvicorn (1 process) --http {http} --loop {loop}"
    return "gunicorn --workers 1 --worker-class gthread --threads 8"


# -- one measurement ------------------------------------------------------------------------
@dataclass
class Settings:
    """Everything a run was asked to do."""

    stacks: list[str]
    variants: list[str]
    scenarios: list[str]
    runs: int
    duration: float
    warmup: float
    threads: int
    connections: int
    outage_down: float
    soak_duration: float
    settle: float
    ours_options: dict[str, Any]
    quick: bool
    micro: bool
    results_dir: Path
    keep_logs: bool
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-able values."""
        return {
            "stacks": self.stacks,
            "variants": self.variants,
            "scenarios": self.scenarios,
            "runs": self.runs,
            "duration": self.duration,
            "warmup": self.warmup,
            "threads": self.threads,
            "connections": self.connections,
            "outage_down": self.outage_down,
            "soak_duration": self.soak_duration,
            "settle": self.settle,
            "ours_options": self.ours_options,
            "quick": self.quick,
            "micro": self.micro,
        }


class Outage(threading.Thread):
    """Stops the collector ``after`` seconds from now and starts it ``down_for`` s later."""

    def __init__(self, collector: CollectorProcess, after: float, down_for: float) -> None:
        super().__init__(name="outage", daemon=True)
        self.collector = collector
        self.after = after
        self.down_for = down_for
        self.cancelled = threading.Event()
        self.down_at: float | None = None
        self.up_at: float | None = None
        self.error: str | None = None
        self._t0 = time.monotonic()

    def run(self) -> None:
        try:
            if self.cancelled.wait(self.after):
                return
            self.collector.down()
            self.down_at = time.monotonic() - self._t0
            self.cancelled.wait(self.down_for)
            self.collector.up()
            self.up_at = time.monotonic() - self._t0
        except Exception as exc:  # reported with the measurement
            self.error = f"{type(exc).__name__}: {exc}"


class Harness:
    """Runs the scenarios, the soak and the micro-benchmarks; writes the results."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.collector = CollectorProcess(port=free_port(), log_path=log_dir / "collector.log")
        self._count = 0

    def _settle(self, server: Service, variant: str, fallback: int) -> tuple[int, int, float]:
        """Wait until the collector counted a hit for every request the app served, or
        counting stopped; the hits counted, the requests served and the seconds waited."""
        start = time.monotonic()
        served = _served(server, fallback)
        if variant in ("bare", "noop", "stub"):  # nothing is delivered
            return 0, served, 0.0
        options = self.settings.ours_options
        backoff_max = float(options.get("backoff_max", 60.0))
        quiet = 2 * backoff_max + float(options.get("batch_max_age", 1.0)) + 2
        if variant not in OURS:
            quiet = 3.0  # the peers send inline: nothing arrives later than that
        last, last_change = self.collector.hits(), start
        while True:
            count = self.collector.hits()
            served = _served(server, served)
            now = time.monotonic()
            if count >= served:
                return count, served, now - start
            if count != last:
                last, last_change = count, now
            if now - last_change >= quiet or now - start >= self.settings.settle:
                return count, served, now - start
            time.sleep(0.2)

    def measure(self, stack: str, scenario: str, variant: str, run: int) -> dict[str, Any]:
        """One server, one load: the measurement's record (with ``error`` if it failed)."""
        s = self.settings
        duration = s.soak_duration if scenario == "soak" else s.duration
        if scenario == "outage60":
            duration = max(duration, OUTAGE60_LOAD)
        record: dict[str, Any] = {
            "stack": stack,
            "scenario": scenario,
            "variant": variant,
            "run": run,
            "duration_s": duration,
        }
        self._count += 1
        options = dict(s.ours_options)
        spool_dir: tempfile.TemporaryDirectory[str] | None = None
        spool: Path | None = None
        if variant in ("spool", "external"):  # ours, with a journal of its own
            spool_dir = tempfile.TemporaryDirectory(prefix="bench-spool-")
            spool = Path(spool_dir.name) / "matomo-spool.sqlite3"
            options["spool"] = str(spool)
        if variant == "external":
            options["sender"] = "external"
        log = self.log_dir / f"{self._count:03d}-{stack}-{scenario}-{variant}-{run}.log"
        server = app_service(
            stack, "ours" if variant in OURS else variant, self.collector.url, options, log
        )
        outage: Outage | None = None
        sampler: RssSampler | None = None
        sender: subprocess.Popen[bytes] | None = None
        try:
            self.collector.up()
            self.collector.set_latency(LATENCY_MS[scenario])
            self.collector.reset()
            server.start()
            if spool is not None and variant == "external":  # the app made the journal
                sender = start_sender(spool, self.collector.url)
            sender_tree = ProcessTree(sender.pid) if sender is not None else None
            tree = ProcessTree(server.pid)
            sampler = RssSampler(tree).start()
            warm: dict[str, Any] = {"requests": 0}
            if s.warmup > 0:
                warm = run_wrk(
                    server.base_url,
                    LoadSpec(duration=s.warmup, threads=s.threads, connections=s.connections),
                )
                time.sleep(0.5)
            baseline_rss = tree.rss_bytes()
            if scenario in ("down", "soak"):
                self.collector.down()
            elif scenario == "outage":
                down_for = min(s.outage_down, duration / 2)
                outage = Outage(self.collector, (duration - down_for) / 2, down_for)
            elif scenario == "outage60":
                outage = Outage(self.collector, (duration - OUTAGE60_DOWN) / 2, OUTAGE60_DOWN)
            cpu_before = tree.cpu_times()
            sender_before = sum(sender_tree.cpu_times()) if sender_tree is not None else 0.0
            if outage is not None:
                outage.start()
            load = run_wrk(
                server.base_url,
                LoadSpec(duration=duration, threads=s.threads, connections=s.connections),
            )
            cpu_loaded = tree.cpu_times()
            journal = _journal_size(options.get("spool"))
            if outage is not None:
                outage.join(duration + 30)
                record["outage"] = {
                    "down_at_s": outage.down_at,
                    "up_at_s": outage.up_at,
                    "error": outage.error,
                }
            self.collector.up()
            delivered, served, waited = self._settle(
                server, variant, warm["requests"] + load["requests"]
            )
            cpu_after = tree.cpu_times()
            sender_after = sum(sender_tree.cpu_times()) if sender_tree is not None else 0.0
            peak_rss = sampler.stop()
            per_request = 1e6 / max(1, load["requests"])
            record.update(
                {
                    "requests": load["requests"],
                    "req_per_s": load["req_per_s"],
                    "latency_ms": load["latency_ms"],
                    "errors": load["errors"],
                    "warmup_requests": warm["requests"],
                    # The server's process tree (master and workers), user + system, over the
                    # load and the drain (the delivery wait), then the two apart.
                    "cpu_us_per_req": (sum(cpu_after) - sum(cpu_before)) * per_request,
                    "cpu_load_us_per_req": (sum(cpu_loaded) - sum(cpu_before)) * per_request,
                    "cpu_drain_us_per_req": (sum(cpu_after) - sum(cpu_loaded)) * per_request,
                    "cpu_system_us_per_req": (cpu_after[1] - cpu_before[1]) * per_request,
                    # The sender process outside the app (external), over the same window.
                    "sender_cpu_us_per_req": (
                        (sender_after - sender_before) * per_request
                        if sender_tree is not None
                        else None
                    ),
                    "baseline_rss_mb": baseline_rss / 2**20,
                    "peak_rss_mb": peak_rss / 2**20,
                    "rss_growth_mb": (peak_rss - baseline_rss) / 2**20,
                    "rss_samples": sampler.samples,
                    "measured_with": tree.backend,
                    "served": served,
                    "expected_hits": served if variant in (*OURS, "peer") else 0,
                    "delivered_hits": delivered,
                    "delivered_ratio": (
                        delivered / max(1, served) if variant in (*OURS, "peer") else None
                    ),
                    "settle_s": round(waited, 2),
                    # with spool: the journal's files (database and WAL) at the end of the load
                    "journal_bytes": journal,
                }
            )
            if variant in (*OURS, "stub"):
                stats = _fetch_json(server.base_url + "/_bench/stats")
                record["dispatcher_stats"] = stats.get("dispatcher", stats)
        except Exception as exc:  # recorded; the other measurements go on
            record["error"] = f"{type(exc).__name__}: {exc}\n{server.log_tail(1500)}"
        finally:
            if outage is not None:
                outage.cancelled.set()
                outage.join(15)
            if sampler is not None:
                sampler.stop()
            server.stop(timeout=15)
            if sender is not None:
                stop_sender(sender)
            if spool_dir is not None:
                spool_dir.cleanup()
            if not self.collector.running:
                self.collector.up()
        _print_measurement(record)
        return record

    def run(self, argv: list[str]) -> dict[str, Any]:
        """Everything the settings ask for; the results (also written to disk)."""
        s = self.settings
        started = datetime.now(timezone.utc)
        data: dict[str, Any] = {
            "schema": 1,
            "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": ["bench/run.py", *argv],
            "machine": machine_info(),
            "config": s.as_dict(),
            "servers": {stack: server_description(stack) for stack in STACKS},
            "skipped": s.skipped,
            "measurements": [],
            "soak": [],
            "micro": {},
        }
        t0 = time.monotonic()
        try:
            self.collector.start()
            scenarios = [sc for sc in s.scenarios if sc != "soak"]
            for run in range(1, s.runs + 1):
                for stack in s.stacks:
                    for scenario in scenarios:
                        for variant in s.variants:
                            if f"{stack}/{variant}" in _skipped_pairs(s.skipped):
                                continue
                            data["measurements"].append(self.measure(stack, scenario, variant, run))
            if "soak" in s.scenarios and "ours" in s.variants:
                for stack in s.stacks:
                    data["soak"].append(self.measure(stack, "soak", "ours", 1))
            if s.micro:
                from bench.micro import run_micro

                print("micro-benchmarks", flush=True)
                # Delivery throughput is measured against a fast collector: the last scenario
                # may have left it slow (500ms).
                self.collector.up()
                self.collector.set_latency(0)
                data["micro"] = run_micro(self.collector, quick=s.quick)
        finally:
            self.collector.stop()
        data["elapsed_s"] = round(time.monotonic() - t0, 1)
        data["loadavg_end"] = _loadavg()
        data["summary"] = report.summarize(data["measurements"])
        data["targets"] = report.check_targets(data["summary"], data["soak"], data["micro"])
        self._write(data, started)
        return data

    def _write(self, data: dict[str, Any], started: datetime) -> None:
        out = self.settings.results_dir
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2, default=str)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        (out / f"{stamp}.json").write_text(text)
        (out / "latest.json").write_text(text)
        md = report.markdown(data)
        (out / "latest.md").write_text(md)
        print()
        print(md)
        print(f"results: {out / (stamp + '.json')}, {out / 'latest.json'}, {out / 'latest.md'}")


def _journal_size(spool: object) -> int | None:
    """Bytes of a journal's files (the database, its WAL and shared memory), or None."""
    if not isinstance(spool, str):
        return None
    paths = [Path(spool + suffix) for suffix in ("", "-wal", "-shm")]
    return sum(p.stat().st_size for p in paths if p.exists())


def _skipped_pairs(skipped: list[str]) -> set[str]:
    return {entry.split(":", 1)[0] for entry in skipped}


def _served(server: Service, fallback: int) -> int:
    """How many requests the app's routes served (``fallback`` if it cannot tell)."""
    stats = _fetch_json(server.base_url + "/_bench/stats")
    served = stats.get("served")
    return served if isinstance(served, int) else fallback


def _fetch_json(url: str) -> Any:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def _print_measurement(m: dict[str, Any]) -> None:
    head = f"{m['stack']} {m['scenario']:>8} {m['variant']:>5} run {m['run']}:"
    if "error" in m:
        print(f"{head} ERROR {m['error'].splitlines()[0]}", flush=True)
        return
    delivered = "-"
    if m["delivered_ratio"] is not None:
        delivered = f"{m['delivered_hits']}/{m['served']}"
    dropped = (m.get("dispatcher_stats") or {}).get("dropped") or {}
    if dropped:
        delivered += " (dropped " + ", ".join(f"{k} {v}" for k, v in dropped.items()) + ")"
    print(
        f"{head} {m['req_per_s']:8,.0f} req/s  p50 {m['latency_ms']['p50']:6.2f} ms  "
        f"p99 {m['latency_ms']['p99']:7.2f} ms  cpu {m['cpu_us_per_req']:5.0f} µs/req "
        f"(sys {m['cpu_system_us_per_req']:3.0f}, drain {m['cpu_drain_us_per_req']:3.0f})  "
        f"rss {m['peak_rss_mb']:5.1f} MB (+{m['rss_growth_mb']:.1f})  delivered {delivered}"
        + (f"  journal {m['journal_bytes'] / 2**20:.1f} MB" if m.get("journal_bytes") else ""),
        flush=True,
    )


# -- command line ---------------------------------------------------------------------------
def _csv(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{text!r} is invalid: expected a comma-separated list of {', '.join(allowed)}"
            )
        return items

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark matomo-middleware (see bench/README.md).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 run, 3 s, 0ms/50ms/down"
    )
    parser.add_argument("--only", choices=STACKS, help="only the ASGI or the WSGI stack")
    parser.add_argument(
        "--scenarios",
        type=_csv(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all; --quick: "
        f"{','.join(QUICK_SCENARIOS)})",
    )
    parser.add_argument(
        "--variants",
        type=_csv(VARIANTS),
        help="subset of bare,noop,stub,ours,peer,spool (default: all but noop and spool)",
    )
    parser.add_argument("--runs", type=int, help="runs of each scenario (default 3; --quick 1)")
    parser.add_argument(
        "--duration", type=float, help="seconds of load per scenario (10; --quick 3)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of warm-up load (1; 0: none)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument(
        "--outage-down", type=float, help="seconds the collector is down in 'outage' (2; --quick 1)"
    )
    parser.add_argument(
        "--soak-duration",
        type=float,
        help="seconds of the 'soak' outage under load (60; --quick 5)",
    )
    parser.add_argument(
        "--settle", type=float, help="max seconds to wait for delivery after load (60; --quick 10)"
    )
    parser.add_argument(
        "--ours-options",
        type=json.loads,
        default=None,
        help=f"JSON of our middleware's options (default {json.dumps(DEFAULT_OURS_OPTIONS)})",
    )
    parser.add_argument("--no-micro", action="store_true", help="skip the micro-benchmarks")
    parser.add_argument(
        "--results-dir", type=Path, default=BENCH / "results", help="where to write (bench/results)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    parser.add_argument(
        "--no-venv",
        action="store_true",
        help="use this interpreter instead of bench/.venv-bench (peers skipped if missing)",
    )
    parser.add_argument("--reinstall", action="store_true", help="recreate bench/.venv-bench")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """Apply the defaults (full or ``--quick``) to the command line."""
    quick = bool(args.quick)
    stacks = [args.only] if args.only else list(STACKS)
    variants = args.variants or list(DEFAULT_VARIANTS)
    skipped = []
    if "peer" in variants:
        for stack in stacks:
            module = PEER_MODULES[stack]
            if util.find_spec(module) is None:
                skipped.append(f"{stack}/peer: {module} is not installed")
    return Settings(
        stacks=stacks,
        variants=variants,
        scenarios=args.scenarios or list(QUICK_SCENARIOS if quick else SCENARIOS),
        runs=args.runs or (1 if quick else 3),
        duration=args.duration or (3.0 if quick else 10.0),
        warmup=args.warmup,
        threads=args.threads,
        connections=args.connections,
        outage_down=args.outage_down or (1.0 if quick else 2.0),
        soak_duration=args.soak_duration or (5.0 if quick else 60.0),
        settle=args.settle or (10.0 if quick else 60.0),
        ours_options=dict(DEFAULT_OURS_OPTIONS if args.ours_options is None else args.ours_options),
        quick=quick,
        micro=not args.no_micro,
        results_dir=args.results_dir.resolve(),
        keep_logs=bool(args.keep_logs),
        skipped=skipped,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: bootstrap the venv (unless ``--no-venv``), then benchmark."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not args.no_venv:
        python = ensure_venv(reinstall=args.reinstall)
        rest = [a for a in argv if a != "--reinstall"]
        return subprocess.call([str(python), str(Path(__file__).resolve()), "--no-venv", *rest])
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    settings = settings_from(args)
    for line in settings.skipped:
        print(f"skipped {line}", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    try:
        data = Harness(settings, log_dir).run(argv)
    finally:
        if settings.keep_logs:
            print(f"server logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    failed = [m for m in data["measurements"] + data["soak"] if "error" in m]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
