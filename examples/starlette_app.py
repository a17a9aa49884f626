"""Starlette, tracked: `MATOMO_URL=... uvicorn examples.starlette_app:app`."""

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from matomo_asgi import MatomoMiddleware


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.path_params['name']}")


app = Starlette(
    routes=[Route("/hello/{name}", hello)],
    middleware=[
        Middleware(
            MatomoMiddleware,
            url=os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
            site_id=int(os.environ.get("MATOMO_SITE_ID", "1")),
            token_auth=os.environ.get("MATOMO_TOKEN_AUTH") or None,
        )
    ],
)
