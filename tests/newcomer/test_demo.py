"""The quick-start demo (``python examples/demo.py``) run as a user runs it, and the collector's
live page seen in headless Chromium: it refreshes by itself and shows hostile values as text."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from matomo_tracking.testing import Collector, CollectorServer
from tests.newcomer.browser import Chromium
from tests.sentinel import SENTINEL_TOKEN
from tests.servers import BIN, ROOT, require_command

pytestmark = pytest.mark.e2e

DEMO = [str(BIN / "python"), str(ROOT / "examples" / "demo.py")]


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATOMO_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def table(output: str) -> list[dict[str, str]]:
    """The rows of the demo's table, cut at the columns its dashed line marks."""
    lines = output.splitlines()
    dashes = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+( +-+)+ *", line))
    spans = [m.span() for m in re.finditer(r"-+", lines[dashes])]
    names = [lines[dashes - 1][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[dashes + 1 :]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in spans[:-1]] + [line[spans[-1][0] :].strip()]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def app_url(output: str) -> str:
    match = re.search(r"demo app on (http://127\.0\.0\.1:\d+)", output)
    assert match, output
    return match.group(1)


def test_demo_runs_by_itself_and_prints_what_matomo_received() -> None:
    result = subprocess.run(
        DEMO, cwd=ROOT, env=demo_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    base = app_url(result.stdout)
    rows = table(result.stdout)
    pages = {
        (r["url"], r["status"], r["action"]) for r in rows if not r["action"].startswith("event")
    }
    assert pages == {
        (f"{base}/", "200", "/"),
        (f"{base}/api/items/42?color=red", "200", "/api/items/{item_id}"),
        (f"{base}/missing", "404", "/missing"),
        (f"{base}/boom", "500", "/boom"),
    }
    events = [r for r in rows if r["action"].startswith("event")]
    assert [e["url"] for e in events] == [f"{base}/api/items/42?color=red"]
    assert all(r["pf_srv"].isdigit() for r in rows if not r["action"].startswith("event"))
    assert len({r["visitor"] for r in rows}) == 1  # one browser, one visitor
    assert "delivery: sent=5 invalid=0 dropped=0" in result.stdout


def test_demo_tracks_into_the_matomo_named_by_the_environment() -> None:
    with CollectorServer(Collector(site_ids=[3], token_auth=SENTINEL_TOKEN)) as matomo:
        env = demo_env(
            MATOMO_URL=matomo.base_url, MATOMO_SITE_ID="3", MATOMO_TOKEN_AUTH=SENTINEL_TOKEN
        )
        result = subprocess.run(DEMO, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "delivery: sent=5 invalid=0 dropped=0" in result.stdout
        assert SENTINEL_TOKEN not in output
        hits = matomo.collector.hits
    assert len(hits) == 5
    assert all(h.authenticated and h["idsite"] == "3" for h in hits)


class Demo:
    """``demo.py --serve`` in the background, its output collected line by line."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [*DEMO, "--serve"],
            cwd=ROOT,
            env=demo_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"demo never printed {pattern!r}:\n{self.output}")

    def interrupt(self) -> int:
        """Ctrl-C: the demo stops serving, flushes, prints its table and exits."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def served_demo() -> Iterator[Demo]:
    demo = Demo()
    try:
        yield demo
    finally:
        demo.kill()


def test_demo_serve_keeps_serving_until_ctrl_c(served_demo: Demo) -> None:
    collector = served_demo.wait_for_line(r"watch hits arrive at (http://\S+?)/? ").group(1)
    base = app_url(served_demo.output)
    time.sleep(0.5)  # still serving after the scripted requests
    assert httpx.get(base + "/api/items/7?later=1", timeout=10).status_code == 200
    deadline = time.monotonic() + 10
    while base + "/api/items/7?later=1" not in httpx.get(collector + "/hits.json").text:
        assert time.monotonic() < deadline, "the late request never reached the collector"
        time.sleep(0.1)
    assert served_demo.interrupt() == 0
    assert "delivery: sent=7 invalid=0 dropped=0" in served_demo.output


HIT_ROWS = "document.querySelectorAll('#hits tr').length - 1"
PAGE_TEXT = "(document.body ? document.body.innerText : '')"


def test_collector_page_shows_new_hits_by_itself(served_demo: Demo) -> None:
    chromium = require_command("chromium")
    collector = served_demo.wait_for_line(r"watch hits arrive at (http://\S+?)/? ").group(1)
    base = app_url(served_demo.output)
    with Chromium(chromium, collector + "/") as browser:
        assert browser.wait_until(f"{HIT_ROWS} >= 5 && document.title") == "Matomo collector"
        probe = "/api/items/seen-in-chromium?from=browser"
        assert httpx.get(base + probe, timeout=10).status_code == 200
        # No navigation from here on: the page's own refresh must bring the new hit.
        text = browser.wait_until(f"{PAGE_TEXT}.includes({base + probe!r}) && {PAGE_TEXT}")
        assert "7 hit(s) received" in text
    assert served_demo.interrupt() == 0
    assert any(row["url"] == base + probe for row in table(served_demo.output))


HOSTILE = (
    "<script>document.title='owned'</script>"
    "<img src=x onerror=\"document.title='owned'\"><b id=injected>bold</b>"
)


def test_collector_page_shows_values_as_text() -> None:
    chromium = require_command("chromium")
    with CollectorServer() as matomo:
        hit = {"idsite": "1", "rec": "1", "action_name": HOSTILE, "url": "https://a.example/<b>"}
        httpx.get(matomo.url, params=hit, timeout=5).raise_for_status()
        with Chromium(chromium, matomo.base_url + "/") as browser:
            cell = "document.querySelector('#hits tr:nth-child(2) td:nth-child(2)')"
            assert browser.wait_until(f"{cell} && {cell}.textContent") == HOSTILE
            assert browser.evaluate("document.title") == "Matomo collector"
            assert browser.evaluate("document.getElementById('injected') === null") is True
            assert browser.evaluate("document.querySelectorAll('script, img, b').length") == 0
            assert "https://a.example/<b>" in browser.evaluate(PAGE_TEXT)


def test_collector_page_in_chromium_types_rejections_and_a_click() -> None:
    chromium = require_command("chromium")
    with CollectorServer(Collector(token_auth=SENTINEL_TOKEN, status_dimension=1)) as matomo:
        base = {"idsite": "1", "rec": "1", "url": "https://a.example/p"}
        for hit in (
            {**base, "action_name": "Gone", "dimension1": "404"},
            {**base, "e_c": "video", "e_a": "play"},
            {**base, "search": "lamp"},
            {**base, "idsite": "7", "action_name": "<i>nowhere</i>"},  # rejected: no site 7
        ):
            httpx.get(matomo.url, params=hit, timeout=5)
        with Chromium(chromium, matomo.base_url + "/") as browser:
            cells = (
                "Array.from(document.querySelectorAll('#hits tr')).slice(1).map("
                "r => Array.from(r.cells).map(c => c.textContent))"
            )
            rows = browser.wait_until(
                f"document.querySelectorAll('#hits tr').length > 3 && {cells}"
            )
            assert [(r[1], r[2], r[4]) for r in rows] == [
                ("lamp", "site search", ""),
                ("video / play", "event", ""),
                ("Gone", "page view", "404"),
            ]
            counts = "document.getElementById('counts').textContent"
            assert browser.evaluate(counts) == "tracked: 3invalid: 1"
            reason = "document.querySelector('#rejected tr:nth-child(2) td').textContent"
            assert browser.evaluate(reason) == "idsite: unknown or invalid site"
            assert browser.evaluate("document.querySelectorAll('script, i').length") == 0
            # A click on the oldest hit opens every parameter it carried.
            browser.evaluate("document.querySelector('#hits tr:last-child a').click()")
            params = (
                "document.getElementById('params') && Object.fromEntries(Array.from("
                "document.querySelectorAll('#params tr')).map(r => [r.cells[0] ? "
                "r.querySelector('th').textContent : '', r.querySelector('td').textContent]))"
            )
            shown = browser.wait_until(params)
            assert shown == {**base, "action_name": "Gone", "dimension1": "404"}
