"""Flask, tracked: `MATOMO_URL=... gunicorn -k gthread examples.flask_app:app`."""

import os

from flask import Flask, request

from matomo_wsgi import MatomoMiddleware

app = Flask(__name__)


@app.get("/hello/<name>")
def hello(name: str) -> str:
    request.environ["matomo"].set_user_id(request.args.get("user"))
    return f"hello {name}"


app.wsgi_app = MatomoMiddleware(  # type: ignore[method-assign]
    app.wsgi_app,
    url=os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
    site_id=int(os.environ.get("MATOMO_SITE_ID", "1")),
    token_auth=os.environ.get("MATOMO_TOKEN_AUTH") or None,
    ignore_paths=["/static"],
)
