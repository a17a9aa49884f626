"""Hits added by a handler and by the standalone trackers, through real servers and the
collector served on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from matomo_asgi import AsyncTracker
from matomo_tracking.testing import Collector, CollectorServer
from tests.sentinel import SENTINEL_TOKEN
from tests.servers import ServerProcess, free_port

BROWSER = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "accept-language": "de-CH",
}


@pytest.mark.e2e
def test_handler_hits_follow_the_page_view_in_order_sharing_visitor_and_pv_id() -> None:
    with CollectorServer(Collector(token_auth=SENTINEL_TOKEN)) as matomo:
        port = free_port()
        args = [
            "--factory",
            "tests.tracker.shop_app:from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with ServerProcess(
            "uvicorn",
            [*args, "--log-level", "warning"],
            port=port,
            env={"MATOMO_URL": matomo.base_url},
        ) as server:
            response = httpx.post(f"{server.base_url}/checkout/c9", headers=BROWSER)
            assert response.json() == {"order": "order-c9"}
            hits = matomo.collector.wait_for(3, timeout=10)
    page, event, order = hits
    assert page["action_name"] == "/checkout/{cart_id}"
    assert (event["e_c"], event["e_a"], event["e_n"], event["e_v"], event["ca"]) == (
        "checkout",
        "submit",
        "c9",
        "2",
        "1",
    )
    assert (order["idgoal"], order["ec_id"], order["revenue"], order["ec_tx"]) == (
        "0",
        "order-c9",
        "42.5",
        "3.5",
    )
    assert order["ec_items"] == '[["SKU-1","Mug","Kitchen",21.25,2]]'
    for hit in (event, order):
        for key in ("pv_id", "ua", "lang", "cip", "url", "idsite"):
            assert hit[key] == page[key], key
        assert "action_name" not in hit.params
    assert page["cip"] == "127.0.0.1"
    assert page.authenticated
    assert matomo.collector.invalid == []


@pytest.mark.e2e
def test_async_tracker_delivers_every_kind_of_hit() -> None:
    with CollectorServer() as matomo:

        async def run() -> None:
            async with AsyncTracker(url=matomo.base_url, batch_max_age=0.05) as tracker:
                tracker.set(url="https://jobs.example/nightly", user_id="cron")
                tracker.track_page_view("Nightly job")
                tracker.track_event("job", "done", value=3)
                tracker.track_site_search("invoices", count=2)
                tracker.track_goal(1, 5)
                tracker.track_ecommerce_cart_update(10, items=[{"sku": "A", "price": 10}])
                tracker.track_ecommerce_order("o-1", 10, items=[{"sku": "A", "price": 10}])
                tracker.track_product_view(sku="A", name="Apple", price=10)
                tracker.track_content_impression("Banner")
                tracker.track_content_interaction("click", "Banner")
                tracker.track_link("https://other.example/")
                tracker.track_download("https://jobs.example/report.pdf")
                tracker.ping()
                assert await tracker.aflush(5)
                stats = tracker.stats()
            assert (stats.sent, stats.invalid, stats.dropped_total) == (12, 0, 0)

        asyncio.run(run())
        hits = matomo.collector.wait_for(12)
    assert [h.get("uid") for h in hits] == ["cron"] * 12
    assert hits[0]["action_name"] == "Nightly job"
    assert hits[-1]["ping"] == "1"


@pytest.mark.e2e
def test_sync_tracker_in_a_script_and_inline() -> None:
    from matomo_wsgi import Tracker

    with CollectorServer() as matomo:
        with Tracker(url=matomo.base_url, batch_max_age=0.05) as tracker:
            tracker.set(url="https://jobs.example/import", visitor_id="00000000000000aa")
            tracker.track_page_view("Import")
            tracker.track_event("import", "rows", value=120)
            assert tracker.flush(5)
        inline = Tracker(url=matomo.base_url, sync_mode=True)
        assert inline.track_goal(2, url="https://jobs.example/import")
        assert len(matomo.collector.hits) == 3  # sent before track_goal returned
        inline.close()
    assert [h.get("cid") for h in matomo.collector.hits[:2]] == ["00000000000000aa"] * 2
    assert matomo.collector.hits[2]["idgoal"] == "2"
