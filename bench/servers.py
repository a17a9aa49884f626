"""Server subprocesses for the benchmarks, and measurements of their process trees.

Every server runs in its own process group on 127.0.0.1 and is stopped with its whole group
(SIGTERM, then SIGKILL). CPU time and RSS are read with psutil when it is installed, else
from ``/proc`` (Linux), so the harness also runs in a venv without psutil.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "ROOT",
    "SENDER_COMMAND",
    "CollectorProcess",
    "ProcessTree",
    "RssSampler",
    "Service",
    "free_port",
    "start_sender",
    "stop_sender",
    "wait_for_port",
]

#: The external sender's command (``matomo-middleware send``), given ``--spool`` and ``--url``.
SENDER_COMMAND = [sys.executable, "-m", "matomo_wsgi.cli", "send"]


def start_sender(spool: Path, url: str) -> subprocess.Popen[bytes]:
    """``matomo-middleware send --spool SPOOL --url URL``: the sender outside the app
    (``sender="external"``), in a session of its own."""
    return subprocess.Popen(
        [*SENDER_COMMAND, "--spool", str(spool), "--url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_sender(sender: subprocess.Popen[bytes]) -> None:
    """SIGTERM the sender, SIGKILL it if it has not ended 10 s later."""
    sender.terminate()
    try:
        sender.wait(10)
    except subprocess.TimeoutExpired:
        sender.kill()
        sender.wait(5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Service:
    """A server subprocess in its own process group, listening on 127.0.0.1:port.

    Output goes to ``log_path``; ``log_tail()`` reads its end for error messages.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        startup_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.port = port
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p
        )
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The pid of the server's main process."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> Service:
        """Start the process and wait until its port accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, self.startup_timeout, self.process)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start ({exc}):\n{self.log_tail()}") from None
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to the whole process group, SIGKILL after ``timeout`` s; the exit code."""
        process = self.process
        if process is None:
            return None
        self.process = None
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(5)
        # Whatever the group left behind (gunicorn workers of a killed master).
        _signal_group(process.pid, signal.SIGKILL)
        return process.returncode

    def log_tail(self, size: int = 4000) -> str:
        """The last ``size`` characters of the server's output."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-size:].decode("utf-8", "replace")

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class CollectorProcess(Service):
    """The fast collector (``bench.collector``) as a subprocess, with its control endpoints.

    ``down()`` stops it (connections are refused: a Matomo outage) and ``up()`` starts it
    again on the same port; the hit counts survive the restart (the collector writes them to
    a file when it stops, and they are added to what the new process counts).
    """

    def __init__(self, *, port: int, log_path: Path, python: str = sys.executable) -> None:
        self.counts_file = log_path.with_suffix(".counts.json")
        super().__init__(
            "collector",
            [
                python,
                "-m",
                "bench.collector",
                "--port",
                str(port),
                "--counts-file",
                str(self.counts_file),
            ],
            port=port,
            log_path=log_path,
        )
        self._carried = 0
        self._latency_ms = 0.0
        self._per_hit_ms = 0.0

    @property
    def url(self) -> str:
        """The Matomo base URL to configure (``/matomo.php`` is appended by the clients)."""
        return self.base_url

    def start(self) -> CollectorProcess:
        """Start (or restart) the collector, with the latency it had."""
        self.counts_file.unlink(missing_ok=True)
        super().start()
        if self._latency_ms or self._per_hit_ms:
            self.set_latency(self._latency_ms, self._per_hit_ms)
        return self

    @property
    def running(self) -> bool:
        """Whether the collector process is up."""
        return self.process is not None and self.process.poll() is None

    def down(self) -> None:
        """Stop the collector: connections to its port are refused until ``up()``."""
        if self.process is None:
            return
        last = self._live_counts()
        self.stop()
        try:
            final = json.loads(self.counts_file.read_text())
        except (OSError, ValueError):
            final = last
        self._carried += int((final or {}).get("hits", 0))

    def up(self) -> None:
        """Listen again on the same port."""
        if not self.running:
            self.start()

    def hits(self) -> int:
        """Hits counted since the last ``reset()``, across restarts."""
        live = self._live_counts() if self.running else None
        return self._carried + int((live or {}).get("hits", 0))

    def counts(self) -> dict[str, Any]:
        """The live counters of the running process (empty while it is down)."""
        return self._live_counts() or {}

    def reset(self) -> None:
        """Zero the counters."""
        self._carried = 0
        self._control("POST", "/_bench/reset")

    def set_latency(self, latency_ms: float, per_hit_ms: float = 0.0) -> None:
        """Wait ``latency_ms`` before answering each tracking request, plus ``per_hit_ms`` for
        each hit of a bulk request (Matomo's pace: about 4 ms a new-visit hit)."""
        self._latency_ms, self._per_hit_ms = latency_ms, per_hit_ms
        self._control("POST", f"/_bench/mode?latency_ms={latency_ms:g}&per_hit_ms={per_hit_ms:g}")

    def _live_counts(self) -> dict[str, Any] | None:
        try:
            return self._control("GET", "/_bench/counts")
        except OSError:
            return None

    def _control(self, method: str, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise OSError(f"collector answered {response.status} to {method} {path}")
        data: dict[str, Any] = json.loads(body)
        return data


class ProcessTree:
    """CPU time and resident memory of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            import psutil  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            self._psutil: Any = None
        else:
            self._psutil = psutil
            self._root = psutil.Process(pid)

    @property
    def backend(self) -> str:
        """``psutil`` or ``/proc``."""
        return "psutil" if self._psutil is not None else "/proc"

    def _pids(self) -> list[int]:
        pids = [self.pid]
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(int(stat[1]), []).append(int(entry))
        index = 0
        while index < len(pids):
            pids.extend(children.get(pids[index], ()))
            index += 1
        return pids

    def cpu_times(self) -> tuple[float, float]:
        """User and system CPU seconds of the live tree (master and workers), from ``/proc``."""
        ticks = os.sysconf("SC_CLK_TCK")
        user = system = 0
        for pid in self._pids():
            stat = _proc_stat(pid)
            if stat is not None:
                # fields after "(comm)": state=0, ppid=1, ..., utime=11, stime=12
                user += int(stat[11])
                system += int(stat[12])
        return user / ticks, system / ticks

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the live tree."""
        return sum(self.cpu_times())

    def rss_bytes(self) -> int:
        """Resident set size of the live tree, summed."""
        if self._psutil is not None:
            total = 0
            for proc in self._processes():
                with contextlib.suppress(self._psutil.Error):
                    total += proc.memory_info().rss
            return total
        page = os.sysconf("SC_PAGE_SIZE")
        total = 0
        for pid in self._pids():
            try:
                fields = Path(f"/proc/{pid}/statm").read_text().split()
            except OSError:
                continue
            total += int(fields[1]) * page
        return total

    def _processes(self) -> list[Any]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except self._psutil.Error:
            return []


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


class RssSampler:
    """Samples a process tree's RSS every ``interval`` s in a thread; keeps the peak."""

    def __init__(self, tree: ProcessTree, interval: float = 0.1) -> None:
        self.tree = tree
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.tree.rss_bytes()
            self.samples += 1
            self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        """Begin sampling."""
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling; the peak RSS in bytes."""
        self._stop.set()
        self._thread.join(5)
        return self.peak

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
