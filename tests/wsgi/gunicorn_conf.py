"""gunicorn configuration of the ``--preload`` end-to-end test: the README's hook."""

from matomo_wsgi.gunicorn import worker_exit

__all__ = ["worker_exit"]
