"""Litestar, tracked: `MATOMO_URL=... uvicorn examples.litestar_app:app`."""

import os

from litestar import Litestar, Router, get
from litestar.params import FromPath  # Litestar >= 2.19; older versions: `item_id: int`

from matomo_asgi import MatomoMiddleware


@get("/items/{item_id:int}")
async def read_item(item_id: FromPath[int]) -> dict[str, int]:
    return {"item_id": item_id}


app = MatomoMiddleware(
    Litestar([Router(path="/api", route_handlers=[read_item])]),
    url=os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
    site_id=int(os.environ.get("MATOMO_SITE_ID", "1")),
    token_auth=os.environ.get("MATOMO_TOKEN_AUTH") or None,
)
