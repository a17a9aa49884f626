"""Check generated tracking code the way a browser would see it: the HTML structure (Python's
``html.parser``) and the script's effect (run in Node with a stub ``window``/``document``)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("run_snippet.js")


@dataclass
class Parsed:
    """What an HTML parser found: elements (tag, attrs, parent tag), script text, other text."""

    elements: list[tuple[str, dict[str, str | None], str | None]] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    text: str = ""
    comments: list[str] = field(default_factory=list)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parsed = Parsed()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.stack[-1] if self.stack else None
        self.parsed.elements.append((tag, dict(attrs), parent))
        if tag != "img":  # void element
            self.stack.append(tag)
        if tag == "script":
            self.parsed.scripts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.stack[-1] if self.stack else None
        self.parsed.elements.append((tag, dict(attrs), parent))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1:] == [tag], f"unbalanced </{tag}> in {self.stack}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script":
            self.parsed.scripts[-1] += data
        else:
            self.parsed.text += data

    def handle_comment(self, data: str) -> None:
        self.parsed.comments.append(data)


def parse(html: str) -> Parsed:
    """Parse ``html`` and check that every element was closed."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    assert collector.stack == [], f"unclosed elements: {collector.stack}"
    return collector.parsed


def run_script(node: str, script: str) -> dict[str, Any]:
    """Run ``script`` in Node; returns ``{"paq": window._paq, "inserted": [script elements]}``."""
    result = subprocess.run(
        [node, str(RUNNER)],
        input=script.encode("utf-8"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    value: dict[str, Any] = json.loads(result.stdout.decode("utf-8"))
    return value
