"""Tests of the ASGI adapter (matomo_asgi)."""
