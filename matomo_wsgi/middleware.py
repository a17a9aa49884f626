"""The WSGI middleware: every request of the wrapped app becomes a Matomo hit.

The response is observed, never changed: status and headers through ``start_response``, body
bytes as the server pulls them, and the hits are handed to the dispatcher in ``close()``,
after the server sent the body. ``wsgi.file_wrapper`` responses are passed through untouched
(the server keeps its ``sendfile`` fast path); their size is read from the file.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import httpx

from matomo_tracking.config import TrackingConfig, masked_url
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.flow import Pending, RequestFlow, check_dispatcher
from matomo_tracking.request import request_from_wsgi, wsgi_app_path
from matomo_wsgi.dispatcher import ThreadDispatcher
from matomo_wsgi.routes import PathResolver, path_resolver, werkzeug_route

if TYPE_CHECKING:
    # The standard WSGI types (typeshed's, as Flask and Werkzeug use), for type checkers only.
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from typing_extensions import Unpack

    from matomo_tracking.config import TrackingOptions

__all__ = ["MatomoMiddleware"]

# Responses that carry no body whatever the app returns (RFC 9110).
_NO_BODY = frozenset({204, 304})


class MatomoMiddleware:
    """Track every request of a WSGI app (Flask, Django, Pyramid, Bottle, any callable).

    ``app = MatomoMiddleware(app, url="https://matomo.example.org", site_id=1)``; every option
    of ``TrackingConfig`` is a keyword argument, checked here (a bad one raises ``ValueError``
    naming the key). ``dispatcher``: where hits go (default: a ``ThreadDispatcher`` made for
    this config, using ``http_client`` if given).

    Handlers reach the request's ``TrackingContext`` with ``matomo_wsgi.get_context(request)``
    (``environ["matomo"]``). Flask's matched rule, Falcon's ``uri_template`` and Django's
    resolved route become the action name. Wrapped twice, only the outer middleware tracks.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        http_client: httpx.Client | None = None,
        dispatcher: Dispatcher | None = None,
        **options: Unpack[TrackingOptions],
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI callable, got {type(app).__name__}")
        config = TrackingConfig.from_kwargs(options)
        check_dispatcher(dispatcher, http_client)
        if dispatcher is None:
            dispatcher = ThreadDispatcher(config, http_client=http_client)
        self.app = app
        self.config = config
        self.dispatcher = dispatcher
        self._flow = wsgi_flow(config, dispatcher)
        self._resolve = path_resolver(app)

    def __repr__(self) -> str:
        return f"MatomoMiddleware(app={self.app!r}, url={masked_url(self.config.url)!r})"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        pending = self._flow.begin(
            environ,
            environ.get("REQUEST_METHOD"),
            wsgi_app_path(environ),
            lambda: request_from_wsgi(environ),
        )
        if pending is None:  # not tracked, or an outer Matomo middleware tracks it
            return self.app(environ, start_response)
        response = _TrackedResponse(self._flow, pending, environ, start_response, self._resolve)
        try:
            result = self.app(environ, response.start_response)
        except BaseException:
            response.failed()
            raise
        return response.observe(result)


class _TrackedResponse:
    """Observes one response: its ``start_response``, then the body iterable it wraps."""

    __slots__ = (
        "_done",
        "_environ",
        "_flow",
        "_iterator",
        "_resolve",
        "_result",
        "_script_name",
        "_sent",
        "_server_start",
        "_server_write",
        "body_bytes",
        "content_length",
        "content_type",
        "error",
        "pending",
        "status",
        "ttfb",
    )

    def __init__(
        self,
        flow: RequestFlow,
        pending: Pending,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        resolve: PathResolver | None,
    ) -> None:
        self._flow = flow
        self.pending = pending
        self._environ = environ
        self._server_start = start_response
        self._server_write: Callable[[bytes], object] | None = None
        self._script_name = environ.get("SCRIPT_NAME") or ""
        self._resolve = resolve
        self._result: Iterable[bytes] | None = None
        self._iterator: Iterator[bytes] | None = None
        self._sent = False
        self._done = False
        self.status: int | None = None
        self.content_type = ""
        self.content_length: int | None = None
        self.ttfb: float | None = None
        self.body_bytes = 0
        self.error = False

    # -- start_response ------------------------------------------------------------------
    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: OptExcInfo | None = None,
        /,
    ) -> Callable[[bytes], object]:
        if exc_info is None:
            write = self._server_start(status, headers)
        else:
            write = self._server_start(status, headers, exc_info)
        self._server_write = write
        try:
            self.status = int(status.split(" ", 1)[0])
        except ValueError:
            self.status = None
        self.content_type = ""
        self.content_length = None
        for name, value in headers:
            lower = name.lower()
            if lower == "content-type":
                self.content_type = value
            elif lower == "content-length" and value.strip().isdigit():
                self.content_length = int(value)
        if self.pending.route is None:
            # Flask ends its request context (and forgets environ["werkzeug.request"]) before
            # the body is sent: read the rule now.
            self.pending.route = self._werkzeug_route()
        return self._write

    def _werkzeug_route(self) -> str | None:
        rule = werkzeug_route(self._environ)
        if rule is None:
            return None
        # Below a mount (werkzeug's DispatcherMiddleware) the rule is relative to the mount.
        script_name = self._environ.get("SCRIPT_NAME") or ""
        base = self._script_name
        if isinstance(script_name, str) and script_name != base and script_name.startswith(base):
            return _wsgi_text(script_name[len(base) :]).rstrip("/") + rule
        return rule

    def _write(self, data: bytes) -> object:
        """The legacy ``write()`` callable: counted, then passed to the server's."""
        if data:
            if self.ttfb is None:
                self.ttfb = self._flow.timer()
            self.body_bytes += len(data)
            self._sent = True
        write = self._server_write
        assert write is not None
        return write(data)

    # -- the body ------------------------------------------------------------------------
    def observe(self, result: Iterable[bytes]) -> Iterable[bytes]:
        """What to hand the server: the app's own file wrapper when it can be passed through,
        else this object, which counts the body and tracks in ``close()``."""
        file_wrapper = self._environ.get("wsgi.file_wrapper")
        if (
            isinstance(file_wrapper, type)
            and isinstance(result, file_wrapper)
            and self._pass_file(result)
        ):
            return result
        self._result = result
        try:
            self._iterator = iter(result)
        except BaseException:
            self.error = True
            try:
                self._close_result()
            finally:
                self._finish()
            raise
        return self

    def _pass_file(self, wrapper: object) -> bool:
        """Let a server file wrapper through untouched (so ``sendfile`` is used), with its byte
        count read from the file (from the current offset to its end, or ``Content-Length``,
        as servers send it) and tracking hooked onto its ``close()``."""
        filelike = getattr(wrapper, "filelike", None) or getattr(wrapper, "file", None)
        try:
            fd = filelike.fileno()  # type: ignore[union-attr]
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return False
            size = max(0, info.st_size - os.lseek(fd, 0, os.SEEK_CUR))
        except Exception:
            return False
        if self.content_length is not None:
            size = min(size, self.content_length)
        if self.status in _NO_BODY or self.pending.view.method == "HEAD":
            size = 0
        original: Callable[[], object] | None = getattr(wrapper, "close", None)

        def close() -> None:
            try:
                if original is not None:
                    original()
            finally:
                self._finish()

        try:
            wrapper.close = close  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            return False
        self.body_bytes = size
        self._sent = size > 0
        self.ttfb = self._flow.timer()  # the server sends the headers as soon as we return
        return True

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        iterator = self._iterator
        assert iterator is not None
        try:
            chunk = next(iterator)
        except StopIteration:
            if self.ttfb is None:
                self.ttfb = self._flow.timer()  # an empty body: headers go out now
            raise
        except BaseException:
            self.error = True
            raise
        if chunk:
            if self.ttfb is None:
                self.ttfb = self._flow.timer()
            self.body_bytes += len(chunk)
            self._sent = True
        return chunk

    def close(self) -> None:
        """Forward ``close()`` to the app's iterable, then hand the hits to the dispatcher."""
        try:
            self._close_result()
        finally:
            self._finish()

    def _close_result(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()

    def failed(self) -> None:
        """The app raised before returning a body: tracked as a 500."""
        self.error = True
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        pending = self.pending
        status = self.status
        if status is None or (self.error and not self._sent):
            # Nothing reached the client: the server answers 500 itself.
            status = 500
        if pending.route is None and self._resolve is not None:
            try:
                pending.route = self._resolve(pending.view.path)
            except Exception:
                self._flow.internal_error("resolving the route")
        self._flow.finish(
            pending,
            status=status,
            content_type=self.content_type,
            ttfb=self.ttfb,
            body_bytes=self.body_bytes,
            failed=self.error,
        )


def wsgi_flow(config: TrackingConfig, dispatcher: Dispatcher) -> RequestFlow:
    """The request flow of a WSGI-side middleware (this one, Django's), with the process's
    clocks, a random source and a random salt."""
    return RequestFlow(
        config, dispatcher, os.urandom(32), random.Random(), time.time, time.perf_counter
    )


def _wsgi_text(value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value
