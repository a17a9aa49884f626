"""Quart, tracked: `MATOMO_URL=... hypercorn examples.quart_app:app`."""

import os

from quart import Blueprint, Quart

from matomo_asgi import MatomoMiddleware

app = Quart(__name__)
shop = Blueprint("shop", __name__, url_prefix="/shop")


@shop.get("/orders/<int:order_id>")
async def order(order_id: int) -> dict[str, int]:
    return {"order_id": order_id}


app.register_blueprint(shop)
app.asgi_app = MatomoMiddleware(  # type: ignore[method-assign]
    app.asgi_app,
    url=os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
    site_id=int(os.environ.get("MATOMO_SITE_ID", "1")),
    token_auth=os.environ.get("MATOMO_TOKEN_AUTH") or None,
)
