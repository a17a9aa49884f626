"""FastAPI, tracked: `MATOMO_URL=... uvicorn examples.fastapi_app:app`."""

import os

from fastapi import FastAPI, Request

from matomo_asgi import MatomoMiddleware

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request) -> dict[str, int]:
    request.state.matomo.track_event("items", "read", str(item_id))
    return {"item_id": item_id}


app.add_middleware(
    MatomoMiddleware,
    url=os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
    site_id=int(os.environ.get("MATOMO_SITE_ID", "1")),
    token_auth=os.environ.get("MATOMO_TOKEN_AUTH") or None,
    ignore_paths=["/docs", "/openapi.json"],
)
