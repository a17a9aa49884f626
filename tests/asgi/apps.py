"""A FastAPI app and a Starlette app, tracked, for the ASGI tests and for real servers.

The servers load the factories, configured by environment variables (``MATOMO_URL``,
``MATOMO_SITE_ID``, ``MATOMO_TOKEN_AUTH``, ``MATOMO_BATCH_MAX_AGE``, ``MATOMO_TIMEOUT``,
``MATOMO_SHUTDOWN_TIMEOUT``, ``MATOMO_BYTES_DIMENSION``)::

    uvicorn --factory tests.asgi.apps:fastapi_from_env
    hypercorn 'tests.asgi.apps:starlette_from_env()'
    gunicorn -k uvicorn.workers.UvicornWorker 'tests.asgi.apps:fastapi_from_env()'
    granian --interface asgi --factory tests.asgi.apps:fastapi_from_env
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route

from matomo_asgi import MatomoMiddleware, TrackingContext, get_context

_ENV_OPTIONS = (
    ("MATOMO_SITE_ID", "site_id", int),
    ("MATOMO_TOKEN_AUTH", "token_auth", str),
    ("MATOMO_BATCH_MAX_AGE", "batch_max_age", float),
    ("MATOMO_TIMEOUT", "timeout", float),
    ("MATOMO_SHUTDOWN_TIMEOUT", "shutdown_timeout", float),
    ("MATOMO_BYTES_DIMENSION", "bytes_dimension", int),
)


def options_from_env() -> dict[str, Any]:
    """Middleware options from the environment (``MATOMO_URL`` is required)."""
    options: dict[str, Any] = {"url": os.environ["MATOMO_URL"], "visitor_salt": "tests"}
    for variable, key, convert in _ENV_OPTIONS:
        value = os.environ.get(variable)
        if value:
            options[key] = convert(value)
    return options


async def _chunks() -> AsyncIterator[bytes]:
    for i in range(3):
        yield f"data: {i}\n\n".encode()
        await asyncio.sleep(0)


def fastapi_app() -> FastAPI:
    """The untracked FastAPI app."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, request: Request) -> dict[str, int]:
        request.state.matomo.set_dimension(3, f"item-{item_id}")
        return {"item_id": item_id}

    @app.get("/named")
    async def named(request: Request) -> dict[str, str]:
        context: TrackingContext = get_context(request)
        context.set_action_name("A named page")
        context.set_user_id("user-7")
        context.track_event("shop", "view", "named")
        return {"ok": "yes"}

    @app.get("/skipped")
    async def skipped(request: Request) -> dict[str, str]:
        request.state.matomo.skip()
        return {"ok": "skipped"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(_chunks(), media_type="text/event-stream")

    @app.get("/file")
    async def file() -> FileResponse:  # servers with the pathsend extension send it themselves
        return FileResponse(__file__, media_type="text/x-python")

    @app.get("/page")
    async def page() -> Response:
        return Response("<p>hi</p>", media_type="text/html")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom: secret detail 31337")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/healthy")
    async def healthy() -> dict[str, str]:
        return {"ok": "yes"}

    router = APIRouter(prefix="/api/v1")

    @router.get("/users/{user_id}")
    async def user(user_id: str) -> dict[str, str]:
        return {"user": user_id}

    app.include_router(router)

    sub = FastAPI()

    @sub.get("/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    app.mount("/sub", sub)
    return app


async def _item(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"item_id": request.path_params["item_id"]})


async def _hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def _org_item(request: StarletteRequest) -> JSONResponse:
    return JSONResponse(dict(request.path_params))


def starlette_routes() -> list[Route | Mount]:
    """The Starlette app's routes."""
    return [
        Route("/items/{item_id:int}", _item),
        Route("/hello", _hello, methods=["GET"]),
        Mount("/shop/{org}", routes=[Route("/items/{item_id}", _org_item)]),
    ]


def fastapi_from_env() -> FastAPI:
    """The FastAPI app, tracked with ``add_middleware`` as the environment says."""
    app = fastapi_app()
    app.add_middleware(MatomoMiddleware, **options_from_env())
    return app


def starlette_from_env() -> Starlette:
    """The Starlette app, tracked with ``Middleware(...)`` as the environment says."""
    return Starlette(
        routes=starlette_routes(),
        middleware=[Middleware(MatomoMiddleware, **options_from_env())],
    )
