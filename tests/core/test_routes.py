"""Reading route templates off framework objects: the wrapper chain and the shapes read."""

from __future__ import annotations

import pytest

from matomo_tracking.routes import RouteUnavailable, falcon_route, find_wrapped, litestar_route


class Framework:
    def asgi_app(self) -> None:
        """A method that a middleware wraps (Quart, Flask)."""


class Wrapper:
    def __init__(self, inner: object, attribute: str = "app") -> None:
        setattr(self, attribute, inner)


def test_find_wrapped_follows_app_application_and_bound_methods() -> None:
    framework = Framework()
    assert find_wrapped(framework, Framework) is framework
    assert find_wrapped(framework.asgi_app, Framework) is framework
    assert find_wrapped(Wrapper(Wrapper(framework, "application")), Framework) is framework
    assert find_wrapped(Wrapper(framework.asgi_app), Framework) is framework
    assert find_wrapped(Wrapper(object()), Framework) is None
    deep: object = framework
    for _ in range(8):
        deep = Wrapper(deep)
    assert find_wrapped(deep, Framework) is None  # eight wrappers deep is as far as it looks


class Router:
    def __init__(self, found: object) -> None:
        self.found = found
        self.asked: list[str] = []

    def find(self, path: str) -> object:
        self.asked.append(path)
        return self.found


class Options:
    strip_url_path_trailing_slash = True


class FalconLike:
    def __init__(self, found: object, strip: bool = False) -> None:
        self._router = Router(found)
        if strip:
            self.req_options = Options()


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ((object(), {}, {}, "/items/{id:int}"), "/items/{id:int}"),
        (None, None),
        ((object(), {}, {}, None), None),
    ],
)
def test_falcon_route_reads_the_template_of_what_the_router_finds(
    found: object, expected: str | None
) -> None:
    assert falcon_route(FalconLike(found), "/items/1") == expected


def test_falcon_route_strips_the_trailing_slash_when_the_app_does() -> None:
    app = FalconLike(None, strip=True)
    falcon_route(app, "/items/1/")
    falcon_route(app, "/")
    assert app._router.asked == ["/items/1", "/"]


@pytest.mark.parametrize(
    "app", [object(), FalconLike(("too", "short"))], ids=["no-router", "shape"]
)
def test_falcon_route_of_an_unknown_version_is_unavailable(app: object) -> None:
    with pytest.raises(RouteUnavailable):
        falcon_route(app, "/items/1")


def test_litestar_route() -> None:
    handler = object()
    assert litestar_route({"route_handler": handler, "path_template": "/a/{b}"}) == "/a/{b}"
    assert litestar_route({"route_handler": handler, "path_template": ""}) is None  # a mount
    assert litestar_route({"path_template": "/a/{b}"}) is None  # not routed by Litestar
    with pytest.raises(RouteUnavailable):
        litestar_route({"route_handler": handler})
