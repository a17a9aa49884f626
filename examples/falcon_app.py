"""Falcon, tracked: `MATOMO_URL=... gunicorn examples.falcon_app:app` (WSGI) or
`MATOMO_URL=... uvicorn examples.falcon_app:asgi_app` (ASGI)."""

import os

import falcon
import falcon.asgi

import matomo_asgi
import matomo_wsgi

OPTIONS = {
    "url": os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
    "site_id": int(os.environ.get("MATOMO_SITE_ID", "1")),
    "token_auth": os.environ.get("MATOMO_TOKEN_AUTH") or None,
}


class Thing:
    def on_get(self, req: falcon.Request, resp: falcon.Response, thing_id: int) -> None:
        resp.media = {"thing_id": thing_id}

    async def on_get_async(self, req: object, resp: falcon.asgi.Response, thing_id: int) -> None:
        resp.media = {"thing_id": thing_id}


wsgi = falcon.App()
wsgi.add_route("/things/{thing_id:int}", Thing())
app = matomo_wsgi.MatomoMiddleware(wsgi, **OPTIONS)  # type: ignore[arg-type]

asgi = falcon.asgi.App()
asgi.add_route("/things/{thing_id:int}", Thing(), suffix="async")
asgi_app = matomo_asgi.MatomoMiddleware(asgi, **OPTIONS)  # type: ignore[arg-type]
