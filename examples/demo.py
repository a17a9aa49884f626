"""The quick-start demo: a small Starlette app wrapped in MatomoMiddleware, served by uvicorn on
127.0.0.1, sends a few requests of different kinds and prints what Matomo received.

Without MATOMO_URL it tracks into the embedded Matomo-compatible collector (watch it live at
the collector's URL with --serve). With MATOMO_URL, MATOMO_SITE_ID and optionally
MATOMO_TOKEN_AUTH it tracks into your Matomo and prints the delivery statistics.

    python3 dev.py demo            # run, print the hits, exit
    python3 dev.py demo --serve    # keep serving: click around the app, watch the collector page
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from matomo_asgi import MatomoMiddleware
from matomo_tracking.testing import Collector, CollectorServer

STATUS_DIMENSION = 1


async def home(request: Request) -> HTMLResponse:
    return HTMLResponse(
        "<h1>matomo-middleware demo</h1><ul><li><a href='/api/items/42?color=red'>an API call</a>"
        "<li><a href='/missing'>a 404</a><li><a href='/boom'>an error</a></ul>"
    )


async def item(request: Request) -> JSONResponse:
    request.state.matomo.track_event("demo", "item viewed", request.path_params["item_id"])
    return JSONResponse({"id": request.path_params["item_id"], **request.query_params})


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("the demo's deliberate error (uvicorn answers 500; the hit says 500)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _table(collector: Collector) -> str:
    header = ("time", "action", "url", "status", "pf_srv", "visitor")
    rows = [header]
    for hit in collector.hits:
        p = hit.params
        rows.append(
            (
                time.strftime("%H:%M:%S", time.localtime(hit.recorded_at)),
                p.get("action_name") or f"event: {p.get('e_c')} / {p.get('e_a')}",
                p.get("url", ""),
                p.get(f"dimension{STATUS_DIMENSION}", ""),
                p.get("pf_srv", ""),
                p.get("uid") or p.get("cid") or p.get("_id") or "",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="matomo-middleware demo")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    parser.add_argument("--port", type=int, default=0, help="app port (default: a free one)")
    args = parser.parse_args()

    collector_server: CollectorServer | None = None
    url = os.environ.get("MATOMO_URL")
    if not url:
        collector_server = CollectorServer(Collector(status_dimension=STATUS_DIMENSION)).start()
        url = collector_server.base_url
    site_id = int(os.environ.get("MATOMO_SITE_ID", "1"))

    app = Starlette(
        routes=[Route("/", home), Route("/api/items/{item_id}", item), Route("/boom", boom)]
    )
    tracked = MatomoMiddleware(
        app,
        url=url,
        site_id=site_id,
        token_auth=os.environ.get("MATOMO_TOKEN_AUTH") or None,
        status_dimension=STATUS_DIMENSION,
        visitor_salt=os.environ.get("MATOMO_VISITOR_SALT", "demo-salt"),
    )
    port = args.port or _free_port()
    server = uvicorn.Server(
        uvicorn.Config(tracked, host="127.0.0.1", port=port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    print(f"demo app on {base}, tracking into {url}")

    headers = {
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 "
        "Safari/537.36",
        "Accept-Language": "en-GB,en;q=0.8",
    }
    with httpx.Client(base_url=base, headers=headers) as client:
        for path in ("/", "/api/items/42?color=red", "/missing", "/boom"):
            response = client.get(path, headers={"Referer": base + "/"})
            print(f"  GET {path:<26} -> {response.status_code}")

    if args.serve:
        if collector_server is not None:
            print(f"watch hits arrive at {collector_server.base_url}/  (Ctrl-C stops)")
        try:
            while thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    server.should_exit = True  # lifespan shutdown flushes the queued hits
    thread.join(timeout=15)

    stats = tracked.stats()
    if collector_server is not None:
        print(f"\nWhat Matomo received ({len(collector_server.collector.hits)} hits):\n")
        print(_table(collector_server.collector))
        collector_server.stop()
    print(
        f"\ndelivery: sent={stats.sent} invalid={stats.invalid} dropped={stats.dropped_total}"
        + (f" last_error={stats.last_error}" if stats.last_error else "")
    )
    return 0 if stats.sent and not stats.invalid else 1


if __name__ == "__main__":
    raise SystemExit(main())
