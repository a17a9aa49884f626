"""The core stays pure (no I/O, threads, asyncio, randomness, environment or clock reads) and
exports exactly the public names it means to."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

import matomo_tracking
import matomo_tracking.testing

PACKAGE = Path(matomo_tracking.__file__).resolve().parent
# The journal is the core's one module with I/O (synchronous sqlite3 and the file it creates);
# it is exempted by name and held to its own, narrower rule below.
JOURNAL = PACKAGE / "journal.py"
CORE_MODULES = sorted(
    p
    for p in PACKAGE.rglob("*.py")
    if "testing" not in p.relative_to(PACKAGE).parts and p != JOURNAL
)
TESTING_MODULES = sorted((PACKAGE / "testing").rglob("*.py"))

FORBIDDEN = {
    "httpx",
    "asyncio",
    "threading",
    "socket",
    "starlette",
    "anyio",
    "random",
    "secrets",
    "os",
    "matomo_asgi",
    "matomo_wsgi",
}
# Calls that read a clock: the core takes ``now`` as an argument instead.
CLOCK_CALLS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("time", "localtime"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = ".".join(("matomo_tracking", *path.relative_to(PACKAGE).parent.parts))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                modules.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                modules.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
        ) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            modules.add("<dynamic import>")
    return modules


def clock_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in CLOCK_CALLS
        ):
            found.append(f"{node.func.value.id}.{node.func.attr}() on line {node.lineno}")
    return found


def test_the_scan_sees_every_core_module() -> None:
    names = {p.stem for p in CORE_MODULES}
    assert {
        "config",
        "request",
        "hits",
        "filters",
        "proxies",
        "visitor",
        "wire",
        "delivery",
    } <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_nothing_impure(path: Path) -> None:
    roots = {name.split(".")[0] for name in imported_modules(path)}

    assert roots & FORBIDDEN == set()
    assert "<dynamic import>" not in roots
    assert clock_calls(path) == []


def test_the_journal_does_only_synchronous_file_io() -> None:
    roots = {name.split(".")[0] for name in imported_modules(JOURNAL)}

    pure = {"__future__", "collections", "dataclasses", "heapq", "logging", "re"}
    assert roots <= pure | {"matomo_tracking", "os", "sqlite3"}
    assert clock_calls(JOURNAL) == []  # time is passed in, as everywhere in the core


@pytest.mark.parametrize("path", TESTING_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_testing_modules_need_only_the_standard_library(path: Path) -> None:
    roots = {name.split(".")[0] for name in imported_modules(path)}
    allowed = set(sys.stdlib_module_names) | {
        "__future__",
        "matomo_tracking",
        "pytest",
        "typing_extensions",
    }

    assert roots - allowed == set()
    assert roots & {"matomo_asgi", "matomo_wsgi", "httpx", "starlette"} == set()


def test_the_scanner_catches_forbidden_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os.path\nfrom random import random\nfrom . import wire\nfrom ..x import y\n"
        "import importlib\n"
        "def f():\n    import threading\n    importlib.import_module('socket')\n"
        "    __import__('asyncio')\n    return time.time() + datetime.now()\n"
    )

    modules = imported_modules(probe, package="matomo_tracking.testing")

    assert modules == {
        "os.path",
        "random",
        "matomo_tracking.testing",
        "matomo_tracking.x",
        "importlib",
        "threading",
        "<dynamic import>",
    }
    assert clock_calls(probe) == ["time.time() on line 10", "datetime.now() on line 10"]


# -- the public API -------------------------------------------------------------------------------

INTENDED = {
    "DEFAULT_REDACTED_QUERY_PARAMS",
    "Answer",
    "BatchDelivery",
    "BotInfo",
    "DeliveryEvent",
    "DeliveryQueue",
    "DispatchStats",
    "Dispatcher",
    "EcommerceItem",
    "EncodedHit",
    "Hit",
    "HitBuilder",
    "Origin",
    "RandomSource",
    "RequestView",
    "ResponseView",
    "Send",
    "Sleep",
    "StatsRecorder",
    "TrackingConfig",
    "TrackingContext",
    "TransportError",
    "TrustedProxies",
    "bulk_body",
    "classify_user_agent",
    "encode_hit",
    "is_ai_bot",
    "is_bot",
    "request_from_asgi",
    "request_from_wsgi",
    "tracking_code",
    "tracking_code_for",
}


def public_names(module: types.ModuleType) -> set[str]:
    """Names the package binds itself (submodules excluded)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_core_exports_are_the_intended_names() -> None:
    assert set(matomo_tracking.__all__) == INTENDED
    assert len(matomo_tracking.__all__) == len(INTENDED)  # no duplicates
    assert public_names(matomo_tracking) == INTENDED


def test_every_export_is_documented() -> None:
    for name in matomo_tracking.__all__:
        value = getattr(matomo_tracking, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_testing_exports() -> None:
    assert matomo_tracking.testing.__all__ == ["Collector", "CollectorServer", "ReceivedHit"]
    assert public_names(matomo_tracking.testing) == {"Collector", "CollectorServer", "ReceivedHit"}
