"""A Starlette app with a plain and a streamed page, tracked with the ``bots`` mode from
``MATOMO_BOTS``: ``uvicorn --factory tests.bots.app:from_env``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from matomo_asgi import MatomoMiddleware

BODY = "x" * 1234


async def page(request: Request) -> PlainTextResponse:
    return PlainTextResponse(BODY)


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk {i}\n".encode() * 100

    return StreamingResponse(chunks(), media_type="text/plain")


def from_env() -> MatomoMiddleware:
    app = Starlette(routes=[Route("/page", page), Route("/stream", stream)])
    options = {"bots": os.environ["MATOMO_BOTS"]} if os.environ.get("MATOMO_BOTS") else {}
    return MatomoMiddleware(
        app,
        url=os.environ["MATOMO_URL"],
        visitor_salt="t",
        batch_max_age=0.05,
        bot_source=os.environ.get("MATOMO_BOT_SOURCE") or None,
        **options,  # type: ignore[arg-type]
    )
