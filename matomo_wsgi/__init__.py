"""matomo-middleware for WSGI: the middleware (Flask, Django, Pyramid, Bottle, any WSGI app),
the thread dispatcher that delivers hits in the background, and the per-request context.

```python
from matomo_wsgi import MatomoMiddleware
app.wsgi_app = MatomoMiddleware(app.wsgi_app, url="https://matomo.example.org", site_id=1)
```

Django: ``matomo_wsgi.django.MatomoMiddleware`` in ``MIDDLEWARE``. gunicorn:
``matomo_wsgi.gunicorn.worker_exit``.
"""

from matomo_tracking.actions import EcommerceItem
from matomo_tracking.context import TrackingContext
from matomo_tracking.delivery import DispatchStats
from matomo_wsgi.context import get_context
from matomo_wsgi.dispatcher import ThreadDispatcher
from matomo_wsgi.middleware import MatomoMiddleware
from matomo_wsgi.tracker import Tracker

__all__ = [
    "DispatchStats",
    "EcommerceItem",
    "MatomoMiddleware",
    "ThreadDispatcher",
    "Tracker",
    "TrackingContext",
    "get_context",
]
