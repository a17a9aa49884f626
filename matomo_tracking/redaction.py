"""Secrets kept out of tracked URLs: the values of the configured query parameters (and of
those the ``redact_query`` hook names) become ``REDACTED``, in the query and in the fragment."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_plus

from matomo_tracking.config import TrackingConfig
from matomo_tracking.hooks import Hooks

__all__ = ["Redactor", "redact_query", "redact_url"]


def redact_query(
    query: str, names: frozenset[str], redacts: Callable[[str], bool] | None = None
) -> str:
    """``query`` with ``REDACTED`` as the value of every parameter whose decoded, trimmed name
    is in ``names`` once lower-cased, or for which ``redacts(decoded name)`` is true; every other
    byte (the redacted parameters' names included) stays exactly as sent."""
    if not query or not (names or redacts):
        return query
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        raw, sep, _ = part.partition("=")
        if not sep:
            continue
        name = unquote_plus(raw) if "%" in raw or "+" in raw else raw
        name = name.strip()
        if name.lower() in names or (redacts is not None and redacts(name)):
            parts[i] = raw + "=REDACTED"
            changed = True
    return "&".join(parts) if changed else query


def redact_url(
    url: str, names: frozenset[str], redacts: Callable[[str], bool] | None = None
) -> str:
    """``url`` with its query redacted as by ``redact_query``, and its fragment too (a fragment
    can carry parameters: ``#access_token=...``, ``#/route?token=...``)."""
    if "?" not in url and "#" not in url:
        return url
    base, hash_mark, fragment = url.partition("#")
    path, question_mark, query = base.partition("?")
    if question_mark:
        query = redact_query(query, names, redacts)
    if hash_mark:
        route, inner_mark, inner = fragment.partition("?")
        if inner_mark:
            fragment = route + inner_mark + redact_query(inner, names, redacts)
        else:
            fragment = redact_query(fragment, names, redacts)
    return path + question_mark + query + hash_mark + fragment


class Redactor:
    """One configuration's redaction: ``redact_query_params`` and the ``redact_query`` hook."""

    __slots__ = ("_hook", "_hooks", "_names")

    def __init__(self, config: TrackingConfig, hooks: Hooks) -> None:
        self._names = config.redact_query_params
        self._hook = config.redact_query
        self._hooks = hooks

    def redacts(self, name: str) -> bool:
        """Whether the ``redact_query`` hook redacts parameter ``name``; True if it raises
        (a value that cannot be judged is not sent), logged once."""
        hook = self._hook
        if hook is None:
            return False
        try:
            return bool(hook(name))
        except Exception:
            self._hooks.failed("redact_query", "the parameters it was asked about are redacted")
            return True

    def query(self, query: str) -> str:
        """``query`` redacted (see ``redact_query``)."""
        return redact_query(query, self._names, self.redacts if self._hook is not None else None)

    def url(self, url: str) -> str:
        """``url`` redacted, query and fragment (see ``redact_url``)."""
        return redact_url(url, self._names, self.redacts if self._hook is not None else None)
