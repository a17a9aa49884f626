"""The ``matomo-middleware`` command line: ``check`` a Matomo configuration, run a local
``collector``, ``send`` the journal apps write with ``sender="external"``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Sequence
from typing import TextIO, cast

import httpx

from matomo_tracking.config import TrackingConfig, masked_url
from matomo_tracking.hits import Hit
from matomo_tracking.wire import BULK_HEADERS, bulk_body, encode_hit

__all__ = ["check", "main"]


class _Masked:
    """A text stream that writes to another one with a secret replaced by ``***``."""

    def __init__(self, out: TextIO, secret: str) -> None:
        self._out = out
        self._secret = secret

    def write(self, text: str) -> int:
        return self._out.write(text.replace(self._secret, "***"))

    def flush(self) -> None:
        self._out.flush()


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _explain_transport(exc: httpx.TransportError, host: str) -> str:
    text = " ".join(str(e) for e in _cause_chain(exc)).lower()
    if (
        any(isinstance(e, ssl.SSLError) for e in _cause_chain(exc))
        or "certificate" in text
        or "ssl" in text
    ):
        return (
            f"TLS error talking to {host}: the certificate was not accepted.\n"
            "  What to do: check the URL's host name matches the certificate, that the server's "
            "certificate chain is complete, or pass your own httpx client with the right CA bundle."
        )
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"Timeout: {host} did not answer in time.\n"
            "  What to do: check that Matomo is up and reachable from this machine "
            "(firewall, proxy), or raise `timeout`."
        )
    if any(
        word in text
        for word in (
            "name or service not known",
            "nodename nor servname",
            "getaddrinfo",
            "name resolution",
            "no address associated",
        )
    ):
        return (
            f"Name resolution failed: {host} is not a known host name.\n"
            "  What to do: check the spelling of the URL and this machine's DNS."
        )
    if "refused" in text:
        return (
            f"Connection refused by {host}: nothing listens on that port.\n"
            "  What to do: check the port in the URL and that the web server in front of "
            "Matomo is running."
        )
    return (
        f"Could not reach {host}: {type(exc).__name__}.\n"
        "  What to do: check the URL and the network between this machine and Matomo."
    )


def check(
    url: str,
    site_id: int,
    token_auth: str | None = None,
    *,
    timeout: float = 10.0,
    out: TextIO | None = None,
    client: httpx.Client | None = None,
) -> int:
    """Send one test hit in bulk form and explain the outcome; 0 only if Matomo confirmed it.

    The explanation goes to ``out`` (default: the current ``sys.stdout``)."""
    if out is None:
        out = sys.stdout  # looked up per call, so redirect_stdout and pytest's capsys work
    if token_auth:
        # What a server answers (a redirect's Location, a JSON body) is printed: mask the
        # token in case a server echoes it.
        out = cast(TextIO, _Masked(out, token_auth))
    try:
        config = TrackingConfig(url=url, site_id=site_id, token_auth=token_auth, timeout=timeout)
    except ValueError as exc:
        print(f"Configuration error: {exc}", file=out)
        return 2
    endpoint = config.endpoint
    host = httpx.URL(endpoint).host
    now = time.time()
    params = {
        "idsite": str(site_id),
        "rec": "1",
        "apiv": "1",
        "url": "https://matomo-middleware.check/",
        "action_name": "matomo-middleware check",
        "ua": "matomo-middleware-check",
    }
    if token_auth:
        # cip needs a valid token: Matomo rejects the hit otherwise, so "token accepted" is
        # confirmed by Matomo rather than assumed (192.0.2.1 is a documentation address).
        params["cip"] = "192.0.2.1"
    body = bulk_body([encode_hit(Hit(params, now))], token_auth=config.token_auth, now=now)
    print(f"Sending one test hit for site {site_id} to {masked_url(endpoint)}", file=out)
    own = client is None
    http = client if client is not None else httpx.Client(timeout=timeout)
    try:
        response = http.post(endpoint, content=body, headers=BULK_HEADERS, follow_redirects=False)
    except httpx.TransportError as exc:
        print(_explain_transport(exc, host), file=out)
        return 1
    finally:
        if own:
            http.close()
    status = response.status_code
    if 300 <= status < 400:
        print(
            f"HTTP {status}: Matomo redirects to {response.headers.get('location', '?')}.\n"
            "  What to do: use the final URL (often https:// instead of http://); redirects are "
            "never followed so the token cannot travel elsewhere.",
            file=out,
        )
        return 1
    if status >= 400:
        hint = {
            400: "the request was refused as malformed; is this a Matomo tracking endpoint?",
            401: "the token was refused: check token_auth and its user's write access to the site.",
            403: "access was refused: check token_auth, its write access and web server rules.",
            404: "there is no Matomo tracking endpoint at this URL: use Matomo's base URL "
            "or its matomo.php.",
            405: "this URL does not accept POST: use Matomo's base URL or its matomo.php.",
            413: "the web server refused the body as too large (check its body size limit).",
            429: "Matomo (or a proxy) is rate limiting: try again later.",
        }.get(
            status,
            "Matomo or the web server in front of it failed: look at its error log."
            if status >= 500
            else "the request was refused.",
        )
        print(f"HTTP {status}: {hint}", file=out)
        return 1
    try:
        answer = response.json()
    except (ValueError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict) or "tracked" not in answer:
        print(
            f"HTTP {status} without bulk counts: the hit was accepted but not confirmed.\n"
            "  This is what Matomo's QueuedTracking plugin answers (hits are processed later), or "
            "the URL is not a Matomo. Check Visits > Visits log for a 'matomo-middleware check' "
            "page.",
            file=out,
        )
        return 1
    tracked, invalid = answer.get("tracked"), answer.get("invalid")
    print(f"Matomo answered: tracked={tracked}, invalid={invalid}", file=out)
    if invalid:
        probe = None
        if token_auth:
            # Was it the site or the token? The same hit without cip (as a ping, which stores
            # nothing new) needs no token: tracked, the site exists and the token is the cause.
            without_ip = {k: v for k, v in params.items() if k != "cip"}
            without_ip["ping"] = "1"
            probe_body = bulk_body(
                [encode_hit(Hit(without_ip, now))], token_auth=config.token_auth, now=now
            )
            probe = _bulk_counts(endpoint, probe_body, timeout, client)
        print("  The hit is invalid: " + _invalid_cause(site_id, token_auth, probe), file=out)
        print(
            "  What to do: check the site id under Administration > Websites > Manage, and the "
            "token under Personal > Security; Diagnostics > Tracking failures tells the reason.",
            file=out,
        )
        return 1
    if tracked == 1:
        print(
            f"OK: Matomo tracked the test hit for site {site_id}"
            + (" (token accepted)." if token_auth else ".")
            + "\n  Without token_auth, visitor IPs (cip) cannot be sent; visits are kept apart by "
            "a salted visitor id instead." * (token_auth is None),
            file=out,
        )
        return 0
    print(f"Matomo answered {json.dumps(answer)}: the hit was not confirmed.", file=out)
    return 1


def _bulk_counts(
    endpoint: str, body: bytes, timeout: float, client: httpx.Client | None
) -> tuple[int, int] | None:
    """``check``'s second request: Matomo's (tracked, invalid) for ``body``, or None."""
    http = client if client is not None else httpx.Client(timeout=timeout)
    try:
        response = http.post(endpoint, content=body, headers=BULK_HEADERS, follow_redirects=False)
        answer = response.json()
    except (httpx.HTTPError, ValueError, UnicodeDecodeError):
        return None
    finally:
        if client is None:
            http.close()
    if not isinstance(answer, dict):
        return None
    tracked, invalid = answer.get("tracked"), answer.get("invalid")
    if isinstance(tracked, int) and isinstance(invalid, int):
        return tracked, invalid
    return None


def _invalid_cause(site_id: int, token_auth: str | None, probe: tuple[int, int] | None) -> str:
    """Why ``check``'s test hit is invalid, as far as Matomo's counts tell."""
    unknown_site = (
        f"site id {site_id} does not exist (unknown site): Matomo refuses every hit for it."
    )
    if not token_auth:
        # Without a token the check sends nothing that needs one: only the site can be wrong.
        return unknown_site
    if probe is not None and probe[0] >= 1 and probe[1] == 0:
        return (
            f"site {site_id} exists, but the token is not valid for it: Matomo refused the "
            "visitor IP (cip), which needs a token of a super user or of a user with write or "
            f"admin access to site {site_id} (a cip without such a token is refused). The "
            "token is unknown or expired, or its user lacks that access."
        )
    if probe is not None and probe[1] >= 1:
        return unknown_site
    return (
        f"site id {site_id} does not exist, or the token is not valid or its user cannot write "
        "to the site (with a token, the check sends a visitor IP: Matomo accepts it only with "
        "a valid token)."
    )


def _collector(
    host: str, port: int, site_ids: Sequence[int], status_dimension: int | None, out: TextIO
) -> int:
    from matomo_tracking.testing import Collector, CollectorServer

    collector = Collector(site_ids=site_ids, status_dimension=status_dimension)
    server = CollectorServer(collector, host=host, port=port).start()
    print(f"Matomo-compatible collector on {server.base_url}", file=out)
    print(
        f"  configure url={server.base_url!r}; watch hits at {server.base_url}/ (Ctrl-C stops)",
        file=out,
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _url_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--url",
        default=os.environ.get("MATOMO_URL"),
        help="Matomo base URL or its matomo.php (env MATOMO_URL)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``matomo-middleware`` console script."""
    parser = argparse.ArgumentParser(prog="matomo-middleware", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    chk = commands.add_parser("check", help="send one test hit and explain the outcome")
    _url_argument(chk)
    chk.add_argument(
        "--site-id",
        type=int,
        default=os.environ.get("MATOMO_SITE_ID", "1"),
        help="site id (env MATOMO_SITE_ID)",
    )
    chk.add_argument(
        "--token-auth",
        default=None,
        help="token (prefer env MATOMO_TOKEN_AUTH: arguments are visible to other users)",
    )
    chk.add_argument("--timeout", type=float, default=10.0)
    col = commands.add_parser("collector", help="run the embedded collector for local development")
    col.add_argument("--host", default="127.0.0.1")
    col.add_argument("--port", type=int, default=8765)
    col.add_argument(
        "--site-id",
        type=int,
        action="append",
        dest="site_ids",
        help="a site that exists (repeatable; default 1)",
    )
    col.add_argument(
        "--status-dimension",
        type=int,
        default=None,
        help="the custom dimension your status_dimension sends, for the page's status column",
    )
    snd = commands.add_parser(
        "send",
        help="deliver the journal that apps with sender='external' write",
        allow_abbrev=False,  # "--token x" must not pass for "--token-file x"
    )
    snd.add_argument("--spool", required=True, help="the journal file (the apps' spool=)")
    snd.add_argument(
        "--once",
        action="store_true",
        help="drain the journal and exit: 1 if Matomo refused hits or kept failing",
    )
    _url_argument(snd)
    snd.add_argument(
        "--token-file",
        help="a file holding token_auth (else env MATOMO_TOKEN_AUTH); never the token itself",
    )
    snd.add_argument("--timeout", type=float, default=30.0, help="seconds for a bulk answer")
    snd.add_argument("--shutdown-timeout", type=float, default=5.0)
    snd.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus delivery metrics on this port (extra 'prometheus')",
    )
    snd.add_argument("--metrics-host", default="127.0.0.1", help="address of --metrics-port")
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "send":  # never echoed: it may be a token
            parser.error(
                "send takes no other arguments; the token goes in MATOMO_TOKEN_AUTH or a file "
                "named by --token-file, never on the command line"
            )
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "send":
        return _send(parser, args)
    if args.command == "check":
        if not args.url:
            parser.error("--url is required (or set MATOMO_URL)")
        token = args.token_auth or os.environ.get("MATOMO_TOKEN_AUTH") or None
        return check(args.url, args.site_id, token, timeout=args.timeout)
    return _collector(args.host, args.port, args.site_ids or [1], args.status_dimension, sys.stdout)


def _send(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from matomo_wsgi.sender import send

    if not args.url:
        parser.error("MATOMO_URL is required (or --url)")
    token = os.environ.get("MATOMO_TOKEN_AUTH") or None
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as file:
                token = file.read().strip() or None
        except OSError as exc:  # the path is not shown: it may be a mistyped token
            parser.error(f"cannot read the file given by --token-file ({exc.strerror})")
        if token is None:
            parser.error("the file given by --token-file is empty")
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    metrics = None
    if args.metrics_port is not None:
        from matomo_tracking.metrics import PrometheusMetrics

        try:
            metrics = PrometheusMetrics()
        except ImportError as exc:
            parser.error(str(exc))
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)
    return send(
        args.spool,
        metrics=metrics,
        url=args.url,
        token_auth=token,
        once=args.once,
        timeout=args.timeout,
        shutdown_timeout=args.shutdown_timeout,
    ).status


if __name__ == "__main__":
    sys.exit(main())
