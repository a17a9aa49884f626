#!/usr/bin/env python3
"""Set-up and everyday commands, needing nothing but Python >= 3.10.

    python3 dev.py demo     make .venv, install the project, run the demo and print its hits
    python3 dev.py test     make .venv, install the project with its test tools, run every test
    python3 dev.py lint     ruff check, ruff format --check, mypy --strict

Arguments after the command go to the demo or to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("MATOMO_DEV_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def _ensure_venv(extra: str) -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 - dev.py may be run by any python3
        sys.exit("matomo-middleware needs Python >= 3.10")
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extra}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print(f"installing matomo-middleware[{extra}] into {VENV}", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[{extra}]"], check=True
    )
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "demo":
        _ensure_venv("demo")
        return subprocess.call([str(PYTHON), str(ROOT / "examples" / "demo.py"), *args], cwd=ROOT)
    if command == "test":
        _ensure_venv("dev")
        return subprocess.call(
            [
                str(PYTHON),
                "-m",
                "pytest",
                "--cov=matomo_tracking",
                "--cov-branch",
                "--cov-report=term",
                "--cov-fail-under=95",
                *args,
            ],
            cwd=ROOT,
        )
    if command == "lint":
        _ensure_venv("dev")
        packages = ["matomo_tracking", "matomo_asgi", "matomo_wsgi"]
        steps = [
            [str(BIN / "ruff"), "check", "."],
            [str(BIN / "ruff"), "format", "--check", "."],
            [str(BIN / "mypy"), "--strict", *packages],
        ]
        return max(subprocess.call(step, cwd=ROOT) for step in steps)
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
