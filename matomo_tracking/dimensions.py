"""Custom dimensions of a page view: the configured constants, the status, method and byte
dimensions, and what the handler set, as ``dimension<N>`` parameters."""

from __future__ import annotations

from matomo_tracking.config import TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.fields import MAX_DIMENSION_CHARS, clean_text
from matomo_tracking.request import RequestView, ResponseView

__all__ = ["add_dimensions", "configures_dimensions"]


def configures_dimensions(config: TrackingConfig) -> bool:
    """Whether ``config`` sets a dimension on every page view."""
    return bool(
        config.dimensions
        or config.status_dimension is not None
        or config.method_dimension is not None
        or config.bytes_dimension is not None
    )


def add_dimensions(
    params: dict[str, str],
    config: TrackingConfig,
    request: RequestView,
    response: ResponseView,
    context: TrackingContext | None,
) -> None:
    """Add the page view's ``dimension<N>`` parameters (the handler's win over the config's)."""
    dims: dict[int, str] = dict(config.dimensions)
    if config.status_dimension is not None:
        dims[config.status_dimension] = str(response.status)
    if config.method_dimension is not None:
        dims[config.method_dimension] = request.method
    if config.bytes_dimension is not None:
        dims[config.bytes_dimension] = str(response.body_bytes)
    if context is not None:
        dims.update(context.dimensions)
    for key, value in dims.items():
        params[f"dimension{key}"] = clean_text(value, MAX_DIMENSION_CHARS)
