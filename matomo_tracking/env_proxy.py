"""Whether a proxy of the environment applies to the endpoint: both executors then post with
httpx (which honours it), else with their lean poster. The proxies are passed in
(``urllib.request.getproxies_environment()``): the core reads no environment."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["proxy_applies"]


def proxy_applies(endpoint: str, proxies: Mapping[str, str]) -> bool:
    """Whether one of ``proxies`` (by scheme, as ``getproxies_environment()`` gives them:
    ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, and ``NO_PROXY`` as ``"no"``) applies to
    ``endpoint``."""
    parts = urlsplit(endpoint)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return not bypass(parts.netloc, dict(proxies))
