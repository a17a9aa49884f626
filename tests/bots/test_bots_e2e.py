"""Bot traffic through a real server: Matomo >= 5.7 bot reports carry what the client got."""

from __future__ import annotations

import httpx
import pytest

from matomo_tracking.testing import CollectorServer
from tests.servers import ServerProcess, free_port

GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
BOT_KEYS = {"bots", "recMode", "http_status", "bw_bytes", "source"}


def _serve(matomo: CollectorServer, **env: str) -> ServerProcess:
    port = free_port()
    args = [
        "--factory",
        "tests.bots.app:from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return ServerProcess("uvicorn", args, port=port, env={"MATOMO_URL": matomo.base_url, **env})


@pytest.mark.e2e
def test_bot_reports_carry_status_bytes_received_and_server_time() -> None:
    with (
        CollectorServer() as matomo,
        _serve(matomo, MATOMO_BOTS="bot-reports", MATOMO_BOT_SOURCE="shop") as server,
    ):
        with httpx.Client(base_url=server.base_url, headers={"user-agent": GPTBOT}) as http:
            page = http.get("/page")
            streamed = http.get("/stream")
            missing = http.get("/missing")
        hits = matomo.collector.wait_for(3)
    for hit, response in zip(hits, (page, streamed, missing), strict=True):
        assert hit["recMode"] == "2"
        assert hit["http_status"] == str(response.status_code)
        assert hit["bw_bytes"] == str(len(response.content))
        assert 0 <= int(hit["pf_srv"]) < 5000
        assert hit["source"] == "shop"
        assert hit["ua"] == GPTBOT
    assert hits[1]["bw_bytes"] == str(len(streamed.content)) != "0"


@pytest.mark.e2e
def test_bots_as_visits_sends_bots_1() -> None:
    with CollectorServer() as matomo, _serve(matomo, MATOMO_BOTS="visits") as server:
        httpx.get(f"{server.base_url}/page", headers={"user-agent": GPTBOT})
        (hit,) = matomo.collector.wait_for(1)
    assert hit["bots"] == "1"
    assert not {"recMode", "http_status", "bw_bytes"} & set(hit.params)


@pytest.mark.e2e
def test_default_sends_nothing_bot_specific() -> None:
    with CollectorServer() as matomo, _serve(matomo) as server:
        httpx.get(f"{server.base_url}/page", headers={"user-agent": GPTBOT})
        (hit,) = matomo.collector.wait_for(1)
    assert not BOT_KEYS & set(hit.params)
    assert hit["ua"] == GPTBOT
