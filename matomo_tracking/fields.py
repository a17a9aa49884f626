"""Field limits: values are cut to what Matomo stores, on UTF-8 character boundaries, so
that no value (however large the header it came from) can make a batch fail."""

from __future__ import annotations

import codecs
import re
from urllib.parse import unquote_to_bytes

__all__ = [
    "MAX_ACTION_NAME_BYTES",
    "MAX_DIMENSION_CHARS",
    "MAX_HEADER_CHARS",
    "MAX_PF_MS",
    "MAX_REFERRER_CHARS",
    "MAX_URL_BYTES",
    "MAX_USER_ID_CHARS",
    "clean_text",
    "truncate_bytes",
    "truncate_chars",
    "truncate_url",
]

MAX_URL_BYTES = 1024
MAX_ACTION_NAME_BYTES = 1024
MAX_REFERRER_CHARS = 1500
MAX_USER_ID_CHARS = 200
MAX_DIMENSION_CHARS = 250
MAX_CUSTOM_VARIABLE_CHARS = 200
MAX_ORDER_ID_CHARS = 100
MAX_HEADER_CHARS = 1024
MAX_EVENT_CHARS = 1024
MAX_PF_MS = 16_777_215

# C0 and C1 control characters (Unicode category Cc).
_CONTROL = dict.fromkeys([*range(32), *range(127, 160)])


def truncate_bytes(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes without splitting a character."""
    if len(value) * 4 <= limit:
        return value
    data = value.encode("utf-8", "replace")
    if len(data) <= limit:
        return value
    return data[:limit].decode("utf-8", "ignore")


_TRAILING_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+$")
_HALF_ESCAPE = re.compile(r"(?:%[0-9A-Fa-f]?)+$")  # "%%" too: a literal "%" is no escape


def truncate_url(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes without splitting a character, a
    ``%XX`` escape, or a character written as several escapes (``%C3%A9``)."""
    cut = truncate_bytes(value, limit)
    if len(cut) == len(value):
        return value
    cut = _HALF_ESCAPE.sub("", cut)
    escapes = _TRAILING_ESCAPES.search(cut)
    if escapes is not None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        decoder.decode(unquote_to_bytes(escapes.group()))
        pending = len(decoder.getstate()[0])  # bytes of an unfinished character
        if pending:
            cut = _HALF_ESCAPE.sub("", cut[: len(cut) - 3 * pending])
    return cut


def truncate_chars(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters."""
    return value if len(value) <= limit else value[:limit]


def clean_text(value: str, limit: int) -> str:
    """Control characters removed, surrounding space trimmed, cut to ``limit`` characters."""
    if not value.isprintable():
        value = value.translate(_CONTROL)
    value = value.strip()
    return value if len(value) <= limit else value[:limit]  # truncate_chars(), inlined
