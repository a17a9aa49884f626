"""A ``multiprocessing`` child (what granian's WSGI workers and a ``Pool``'s workers are) ends
with ``os._exit()``: no ``atexit``. Its queued hits are delivered all the same."""

from __future__ import annotations

import multiprocessing

import pytest

from matomo_tracking.testing import CollectorServer
from matomo_wsgi import Tracker


def _child(url: str, count: int) -> None:
    # Batches would wait 30 s: only the exit of the process can send these.
    tracker = Tracker(url=url, site_id=1, batch_max_age=30, visitor_salt="child")
    for n in range(count):
        assert tracker.track_page_view("item", url=f"https://shop.example/items/{n}")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_multiprocessing_child_delivers_its_queued_hits_as_it_ends(method: str) -> None:
    with CollectorServer() as matomo:
        process = multiprocessing.get_context(method).Process(
            target=_child, args=(matomo.base_url, 25)
        )
        process.start()
        process.join(30)
        assert process.exitcode == 0
        delivered = len(matomo.collector.hits)  # read right after the exit, no waiting
    assert delivered == 25
