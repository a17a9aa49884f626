"""``matomo-middleware check``: every outcome a user can meet, explained in plain words with its
exit code, against real servers on 127.0.0.1 (a collector, a plain web server that is not
Matomo, a redirect, a self-signed HTTPS server, a port with nothing listening). The token,
given by option or environment, is never printed. ``matomo-middleware collector`` runs the
embedded collector."""

from __future__ import annotations

import io
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from matomo_tracking.testing import Collector, CollectorServer
from matomo_wsgi.cli import check, main
from tests.sentinel import SENTINEL_TOKEN
from tests.servers import BIN, ROOT, ServerProcess, free_port, self_signed_certificate

Answer = tuple[int, list[tuple[str, str]], bytes]


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.bodies.append(body)
        status, headers, payload = self.server.answer(self.path, body)
        self.send_response(status)
        for name, value in [*headers, ("Content-Length", str(len(payload)))]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalServer(ThreadingHTTPServer):
    """An HTTP (or, given a TLS context, HTTPS) server on 127.0.0.1 whose POST answers come
    from ``answer(path, body)``; it keeps the bodies it received."""

    daemon_threads = True

    def __init__(
        self, answer: Callable[[str, bytes], Answer], tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.answer = answer
        self.bodies: list[bytes] = []
        self.scheme = "https" if tls else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> LocalServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()


def collector_answer(collector: Collector) -> Callable[[str, bytes], Answer]:
    return lambda path, body: collector.handle("POST", path.split("?")[0], "", body)


@pytest.fixture
def matomo() -> Iterator[CollectorServer]:
    with CollectorServer(Collector(token_auth=SENTINEL_TOKEN)) as server:
        yield server


def run_check(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> tuple[int, str]:
    """``matomo-middleware check --url URL --token-auth <sentinel> ...`` in-process: the exit
    code and everything printed (which must never contain the token)."""
    code = main(["check", "--url", url, "--token-auth", SENTINEL_TOKEN, *extra])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert SENTINEL_TOKEN not in output
    return code, output


def test_ok_the_hit_was_tracked_and_the_token_accepted(
    matomo: CollectorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_check(capsys, matomo.base_url)
    assert code == 0
    assert "OK: Matomo tracked the test hit for site 1 (token accepted)" in out
    (hit,) = matomo.collector.hits
    assert hit["action_name"] == "matomo-middleware check"
    assert hit.authenticated


def test_ok_without_a_token_explains_what_a_token_would_add(
    matomo: CollectorServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MATOMO_TOKEN_AUTH", raising=False)
    assert main(["check", "--url", matomo.url]) == 0
    out = capsys.readouterr().out
    assert "OK: Matomo tracked the test hit for site 1." in out
    assert "Without token_auth" in out


def test_the_token_from_the_environment_is_used_and_never_printed(
    matomo: CollectorServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATOMO_TOKEN_AUTH", SENTINEL_TOKEN)
    monkeypatch.setenv("MATOMO_URL", matomo.base_url)
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "token accepted" in out
    assert SENTINEL_TOKEN not in out


def test_ok_reports_matomos_counts(
    matomo: CollectorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_check(capsys, matomo.base_url)

    assert code == 0
    assert "Matomo answered: tracked=1, invalid=0" in out


WRITER = "w" * 32


@pytest.mark.parametrize(
    ("site", "token", "cause"),
    [
        ("9", SENTINEL_TOKEN, "site id 9 does not exist (unknown site)"),
        ("9", None, "site id 9 does not exist (unknown site)"),
        ("1", "0" * 32, "site 1 exists, but the token is not valid for it"),
        ("1", WRITER, "site 1 exists, but the token is not valid for it"),
    ],
    ids=["unknown-site", "unknown-site-without-token", "unknown-token", "token-for-another-site"],
)
def test_an_invalid_hit_is_counted_and_its_cause_named(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    site: str,
    token: str | None,
    cause: str,
) -> None:
    monkeypatch.delenv("MATOMO_TOKEN_AUTH", raising=False)
    collector = Collector(site_ids=(1, 2), token_auth=SENTINEL_TOKEN, write_tokens={WRITER: [2]})
    with CollectorServer(collector) as matomo:
        args = ["check", "--url", matomo.base_url, "--site-id", site]
        code = main([*args, "--token-auth", token] if token else args)
    out = capsys.readouterr().out

    assert code == 1
    assert "Matomo answered: tracked=0, invalid=1" in out
    assert f"The hit is invalid: {cause}" in out
    if token is not None:
        assert "(cip)" in out or "unknown site" in out
        assert token not in out
    assert "Administration > Websites > Manage" in out
    assert "token accepted" not in out
    assert collector.hits == [] or all(h.get("ping") == "1" for h in collector.hits)


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_check(capsys, f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert "Connection refused by 127.0.0.1: nothing listens on that port" in out


def test_name_resolution_failure_is_fast(capsys: pytest.CaptureFixture[str]) -> None:
    # .invalid is reserved (RFC 6761): resolvers answer "no such name" without asking anyone.
    started = time.monotonic()
    code, out = run_check(capsys, "https://matomo.invalid", "--timeout", "2")
    assert time.monotonic() - started < 10
    assert code == 1
    assert "Name resolution failed: matomo.invalid is not a known host name" in out


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (made by ``openssl``)."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def test_tls_error_self_signed_certificate(
    self_signed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = self_signed
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    collector = Collector(token_auth=SENTINEL_TOKEN)
    with LocalServer(collector_answer(collector), tls=tls) as server:
        code, out = run_check(capsys, server.base_url, "--timeout", "5")
        assert code == 1
        assert "TLS error talking to 127.0.0.1: the certificate was not accepted" in out
        assert server.bodies == []  # nothing, token included, was sent over the rejected channel

        # The fix the message suggests: a client that trusts the certificate.
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
            assert check(server.base_url, 1, SENTINEL_TOKEN, out=io.StringIO(), client=client) == 0
    assert len(collector.hits) == 1


def test_timeout_when_matomo_does_not_answer(
    matomo: CollectorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    matomo.collector.hold()
    started = time.monotonic()
    code, out = run_check(capsys, matomo.base_url, "--timeout", "0.5")
    matomo.collector.release()
    assert time.monotonic() - started < 5
    assert code == 1
    assert "Timeout: 127.0.0.1 did not answer in time" in out


def test_404_the_url_is_not_a_matomo(capsys: pytest.CaptureFixture[str]) -> None:
    # Say the URL of the app (or of a site without Matomo): no tracking endpoint there.
    with LocalServer(
        lambda path, body: (404, [("Content-Type", "text/html")], b"Not Found")
    ) as app:
        code, out = run_check(capsys, app.base_url + "/analytics")
    assert code == 1
    assert "HTTP 404: there is no Matomo tracking endpoint at this URL" in out


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "the token was refused"),
        (403, "access was refused"),
        (500, "look at its error log"),
        (503, "look at its error log"),
    ],
)
def test_http_errors(
    matomo: CollectorServer, capsys: pytest.CaptureFixture[str], status: int, words: str
) -> None:
    matomo.collector.fail_with(status)
    code, out = run_check(capsys, matomo.base_url)
    assert code == 1
    assert f"HTTP {status}: " in out
    assert words in out


def test_redirect_is_reported_and_not_followed(
    matomo: CollectorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    def redirect(path: str, body: bytes) -> Answer:
        return 302, [("Location", matomo.url)], b""

    with LocalServer(redirect) as old:
        code, out = run_check(capsys, old.base_url)
    assert code == 1
    assert f"HTTP 302: Matomo redirects to {matomo.url}" in out
    assert "redirects are never followed" in out
    assert matomo.collector.requests == []  # the token did not travel to the new address


def test_configuration_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--url", "matomo.example.org"]) == 2
    assert "Configuration error: url='matomo.example.org' is invalid" in capsys.readouterr().out


def test_console_script_check(matomo: CollectorServer) -> None:
    result = subprocess.run(
        [str(BIN / "matomo-middleware"), "check", "--url", matomo.base_url],
        env={"MATOMO_TOKEN_AUTH": SENTINEL_TOKEN, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: Matomo tracked the test hit for site 1 (token accepted)" in result.stdout
    assert SENTINEL_TOKEN not in result.stdout + result.stderr


def test_console_script_collector() -> None:
    port = free_port()
    with ServerProcess("matomo-middleware", ["collector", "--port", str(port)], port=port) as cli:
        hit = {"idsite": "1", "rec": "1", "url": "https://app.example/x", "action_name": "x"}
        posted = httpx.post(cli.base_url + "/matomo.php", json={"requests": [hit]}, timeout=5)
        assert posted.json() == {"status": "success", "tracked": 1, "invalid": 0}
        assert httpx.get(cli.base_url + "/hits.json", timeout=5).json() == [hit]
        assert "x" in httpx.get(cli.base_url + "/", timeout=5).text
        assert cli.stop(signal.SIGINT) == 0  # Ctrl-C stops it cleanly
        assert f"Matomo-compatible collector on http://127.0.0.1:{port}" in cli.log()


def test_site_id_from_the_environment(
    matomo: CollectorServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATOMO_SITE_ID", "9")
    code, out = run_check(capsys, matomo.base_url)
    assert code == 1
    assert "site id 9 does not exist" in out

    monkeypatch.setenv("MATOMO_SITE_ID", "nine")
    with pytest.raises(SystemExit) as exited:
        main(["check", "--url", matomo.base_url])
    assert exited.value.code == 2
    assert "argument --site-id: invalid int value: 'nine'" in capsys.readouterr().err
