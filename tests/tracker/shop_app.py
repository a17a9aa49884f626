"""A FastAPI shop whose checkout records an event and an ecommerce order, for real servers:
``uvicorn --factory tests.tracker.shop_app:from_env`` (``MATOMO_URL`` required)."""

from __future__ import annotations

import os

from fastapi import FastAPI, Request

from matomo_asgi import EcommerceItem, MatomoMiddleware
from tests.sentinel import SENTINEL_TOKEN


def from_env() -> MatomoMiddleware:
    app = FastAPI()

    @app.post("/checkout/{cart_id}")
    async def checkout(cart_id: str, request: Request) -> dict[str, str]:
        matomo = request.state.matomo
        matomo.track_event("checkout", "submit", cart_id, 2)
        matomo.track_ecommerce_order(
            f"order-{cart_id}",
            42.5,
            items=[EcommerceItem("SKU-1", "Mug", "Kitchen", 21.25, 2)],
            tax=3.5,
        )
        return {"order": f"order-{cart_id}"}

    return MatomoMiddleware(
        app,
        url=os.environ["MATOMO_URL"],
        token_auth=SENTINEL_TOKEN,
        visitor_salt="t",
        batch_max_age=0.05,
    )
