"""The documentation site's own guarantees (CI builds it with ``mkdocs build --strict``):
every page is in the navigation, the build hook refuses public names without docstrings, the
configuration reference lists every configuration key, and the README links to pages that
exist."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
import types

import pytest

pytest.importorskip("mkdocs", reason="the docs extra builds the site")

from mkdocs.exceptions import PluginError

from matomo_tracking import TrackingConfig
from matomo_tracking.config import TrackingOptions
from tests.servers import ROOT

DOCS = ROOT / "docs"


def _hooks() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages, "no pages"
    assert {page for page in pages if f": {page}" not in nav} == set()


def test_the_build_hook_refuses_a_public_name_without_a_docstring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks = _hooks()
    assert hooks.undocumented() == []

    module = types.ModuleType("undocumented_example", "A module.")

    class Thing:
        """A thing."""

        def run(self) -> None:
            pass

    module.Thing = Thing  # type: ignore[attr-defined]
    module.__all__ = ["Thing"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "undocumented_example", module)
    monkeypatch.setattr(hooks, "DOCUMENTED", ("undocumented_example",))
    assert hooks.undocumented() == ["undocumented_example.Thing.run"]
    with pytest.raises(PluginError, match=r"undocumented_example\.Thing\.run"):
        hooks.on_pre_build({})


def test_examples_shown_in_the_docs_exist() -> None:
    for page in DOCS.rglob("*.md"):
        for line in page.read_text().splitlines():
            if line.startswith('--8<-- "'):
                assert (ROOT / line.split('"')[1]).is_file(), (page, line)


CONFIGURATION = (DOCS / "configuration.md").read_text()


def test_every_config_key_is_documented_in_the_configuration_reference() -> None:
    missing = [
        f.name for f in dataclasses.fields(TrackingConfig) if f"| `{f.name}` |" not in CONFIGURATION
    ]
    assert not missing, f"docs/configuration.md lacks: {missing}"


def test_keyword_options_match_the_config() -> None:
    assert set(TrackingOptions.__annotations__) == {
        f.name for f in dataclasses.fields(TrackingConfig)
    }


def test_the_readme_links_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links, "the README links to no documentation page"
    assert [link for link in links if not (ROOT / link).is_file()] == []
