"""Flask whose hits Celery workers deliver through the broker (Redis here): run both
`MATOMO_URL=... celery -A examples.celery_app:celery worker` and
`MATOMO_URL=... gunicorn -k gthread examples.celery_app:app`."""

import os

from celery import Celery
from flask import Flask

from matomo_wsgi import MatomoMiddleware
from matomo_wsgi.celery import CeleryDispatcher, register_delivery_task

# The same in the web processes and in the workers: the token never goes through the broker.
URL = os.environ.get("MATOMO_URL", "http://127.0.0.1:8765")
TOKEN = os.environ.get("MATOMO_TOKEN_AUTH") or None

celery = Celery("example", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
delivery = register_delivery_task(celery, url=URL, token_auth=TOKEN)

app = Flask(__name__)


@app.get("/orders/<int:order_id>")
def order(order_id: int) -> str:
    return f"order {order_id}"


app.wsgi_app = MatomoMiddleware(  # type: ignore[method-assign]
    app.wsgi_app,
    url=URL,
    site_id=int(os.environ.get("MATOMO_SITE_ID", "1")),
    token_auth=TOKEN,
    dispatcher=CeleryDispatcher(delivery),
)
