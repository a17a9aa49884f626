"""Ready to publish: the MIT license shipped, the version written once, a changelog entry for
it, and a source distribution that carries the tests, examples and documentation sources.
(CI also builds the wheel, runs ``twine check`` and imports the wheel in a fresh venv.)"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import matomo_tracking
from tests.servers import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_license_is_mit_and_shipped() -> None:
    assert PYPROJECT["license"] == "MIT"
    assert PYPROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_the_version_is_written_in_one_place() -> None:
    assert "version" not in PYPROJECT
    assert PYPROJECT["dynamic"] == ["version"]
    assert importlib.metadata.version("matomo-middleware") == matomo_tracking.__version__
    written = [
        path.relative_to(ROOT)
        for package in ("matomo_tracking", "matomo_asgi", "matomo_wsgi")
        for path in (ROOT / package).rglob("*.py")
        if re.search(r"^__version__ = ", path.read_text(), re.M)
    ]
    assert written == [Path("matomo_tracking/_version.py")]


def test_the_changelog_has_an_entry_for_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "[Keep a Changelog]" in text
    releases = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert releases, "no release heading"
    assert matomo_tracking.__version__ in releases[:2]  # the newest, or under Unreleased


def _tracked(*folders: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--", *folders], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {name for name in listed if (ROOT / name).is_file()}


def test_the_sdist_carries_the_tests_examples_and_docs(tmp_path: Path) -> None:
    # Built without isolation from this venv's setuptools (no network needed).
    code = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    name = result.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile()}
    wanted = _tracked("tests", "examples", "docs", "matomo_tracking", "matomo_asgi", "matomo_wsgi")
    wanted |= {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "dev.py"}
    if (ROOT / "mkdocs.yml").exists():
        wanted.add("mkdocs.yml")
    assert wanted - members == set()
