"""What Matomo's answer to a bulk POST means, without I/O: the answer as read (at most
``MAX_ANSWER_BYTES`` of it, the same bounded way in every executor), how a request failed
without an answer, the verdict on a batch (settled, retry, split, refused), ``Retry-After``
and the backoff with jitter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from enum import Enum

__all__ = [
    "MAX_ANSWER_BYTES",
    "Answer",
    "AnswerBuffer",
    "ConnectError",
    "TransportError",
    "Verdict",
    "WriteError",
    "answer_maybe_processed",
    "backoff_delay",
    "bulk_counts",
    "explain_refusal",
    "judge",
    "parse_retry_after",
    "transport_error",
]

#: Bytes of an answer read at the most: Matomo's bulk answer is a few dozen bytes (its
#: ``invalid_indices`` list a few hundred more); anything longer is not Matomo's answer.
MAX_ANSWER_BYTES = 16 * 1024


class TransportError(Enum):
    """How a request failed without an HTTP answer."""

    CONNECT = "connect"  # nothing reached Matomo: safe to resend
    TIMEOUT = "timeout"  # the body was sent, no answer in time: Matomo may have the hits
    CUT = "cut"  # the body was sent, the answer was cut or the connection closed mid-answer
    OTHER = "other"  # failed before the body was sent in full: Matomo cannot have the hits

    @property
    def maybe_processed(self) -> bool:
        """Whether Matomo may have recorded the batch (a resend may duplicate it)."""
        return self is TransportError.TIMEOUT or self is TransportError.CUT


class ConnectError(OSError):
    """Raised by a lean poster: the connection (TCP connect or TLS handshake) failed or timed
    out, so nothing was sent."""


class WriteError(OSError):
    """Raised by a lean poster: sending the request failed (or timed out) before it was sent
    in full."""


# Exception class names of httpx/httpcore, h11 and the standard library (and of the two
# classes above) by what they mean; matched by name along the class's MRO, so that the core
# imports no HTTP library.
_BY_NAME = {
    "ConnectError": TransportError.CONNECT,
    "ConnectTimeout": TransportError.CONNECT,
    "PoolTimeout": TransportError.CONNECT,
    "ConnectionRefusedError": TransportError.CONNECT,
    "ReadTimeout": TransportError.TIMEOUT,
    "TimeoutError": TransportError.TIMEOUT,
    "RemoteProtocolError": TransportError.CUT,  # httpx's and h11's: a cut or garbled answer
    "ReadError": TransportError.CUT,
    "IncompleteRead": TransportError.CUT,
    "RemoteDisconnected": TransportError.CUT,
    "BadStatusLine": TransportError.CUT,
    "ConnectionResetError": TransportError.CUT,
    "WriteTimeout": TransportError.OTHER,
    "WriteError": TransportError.OTHER,
    "LocalProtocolError": TransportError.OTHER,  # h11: a request it refused to send
}


def transport_error(exc: BaseException) -> tuple[TransportError, str]:
    """Classify an exception raised by a POST (any HTTP library) and describe it (type and
    message; never the request, so never the token)."""
    kind = TransportError.OTHER
    for cls in type(exc).__mro__:
        found = _BY_NAME.get(cls.__name__)
        if found is not None:
            kind = found
            break
    text = str(exc)
    return kind, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class Answer:
    """Matomo's HTTP answer to a bulk POST (its body read by an ``AnswerBuffer``)."""

    status: int
    body: bytes = b""
    retry_after: str | None = None
    location: str | None = None

    @classmethod
    def of(cls, status: int, body: bytes, headers: Mapping[str, str]) -> Answer:
        """The answer from its status, body and (case-insensitive) headers."""
        return cls(status, body, headers.get("retry-after"), headers.get("location"))


class AnswerBuffer:
    """Gathers an answer's body as it arrives, up to ``MAX_ANSWER_BYTES``: an executor feeds
    it chunks until ``feed`` returns True (enough read), then reads ``body``."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, chunk: bytes) -> bool:
        """Add a chunk; True once the cap is reached (stop reading)."""
        self._data += chunk
        return len(self._data) >= MAX_ANSWER_BYTES

    @property
    def body(self) -> bytes:
        """What was read, at most ``MAX_ANSWER_BYTES``."""
        return bytes(self._data[:MAX_ANSWER_BYTES])


class Verdict(Enum):
    """What an answer means for the batch it answers."""

    SETTLED = "settled"  # 2xx: delivered (Matomo's counts say how many it kept)
    RETRY = "retry"  # Matomo is down, overloaded or slow: resend after a backoff
    SPLIT = "split"  # 413: too large; halves go again (a single hit is dropped)
    REFUSED = "refused"  # any other status: resending would not help


def judge(status: int) -> Verdict:
    """The verdict on a batch answered with HTTP ``status``."""
    if 200 <= status < 300:
        return Verdict.SETTLED
    if status in (408, 429) or status >= 500:
        return Verdict.RETRY
    if status == 413:
        return Verdict.SPLIT
    return Verdict.REFUSED


def answer_maybe_processed(status: int) -> bool:
    """Whether a retry status may follow Matomo's recording the batch: a gateway that gave
    up waiting (504) or lost Matomo's answer (502)."""
    return status in (502, 504)


def bulk_counts(body: bytes) -> tuple[int | None, int]:
    """Matomo's ``tracked`` (None when absent) and ``invalid`` counts in a bulk answer."""
    if not body:
        return None, 0
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, 0
    if not isinstance(data, dict):
        return None, 0
    tracked = data.get("tracked")
    invalid = data.get("invalid")
    t = tracked if isinstance(tracked, int) and not isinstance(tracked, bool) else None
    i = invalid if isinstance(invalid, int) and not isinstance(invalid, bool) else 0
    return t, max(0, i)


def explain_refusal(status: int, location: str | None, count: int) -> str:
    """The log line for a batch Matomo refused for good."""
    if 300 <= status < 400:
        where = f" to {location}" if location else ""
        return (
            f"Matomo answered with a redirect (HTTP {status}{where}); redirects are not followed "
            f"so the token never leaves for another address: configure the final URL. "
            f"{count} hit(s) dropped"
        )
    hint = {
        400: "the request was refused as malformed",
        401: "token_auth was refused: check the token and its write access to the site",
        403: "access was refused: check token_auth and its write access to the site",
        404: "no Matomo at this URL: check url (the base URL or its matomo.php)",
        405: "this URL does not accept POST: check url",
    }.get(status, "the request was refused")
    return f"Matomo answered HTTP {status}: {hint}; {count} hit(s) dropped, not retried"


def backoff_delay(
    attempt: int, *, base: float, cap: float, draw: float, retry_after: float | None = None
) -> float:
    """Exponential backoff with full jitter (``draw`` uniform in [0, 1)), capped at ``cap``;
    a server's ``Retry-After`` is a floor (itself capped)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    delay = ceiling * draw
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²": str.isdigit() is true for it
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" zone: UTC, never the machine's local time
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)
