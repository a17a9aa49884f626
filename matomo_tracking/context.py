"""The per-request object application code uses to shape what is tracked."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from matomo_tracking import actions
from matomo_tracking.actions import Category, EcommerceItem, Number
from matomo_tracking.fields import MAX_DIMENSION_CHARS, MAX_USER_ID_CHARS, clean_text
from matomo_tracking.visitor import valid_visitor_id

__all__ = ["TrackingContext"]

Items = Iterable[EcommerceItem | Mapping[str, object]]


class TrackingContext:
    """Set during a request (ASGI ``request.state.matomo``, WSGI ``environ["matomo"]``).

    Change the automatic page view (action name, URL, referrer, user id, visitor id, custom
    dimensions and variables, product view), add more hits to the same visit (events, site
    searches, goals, ecommerce, content, outlinks, downloads, pings; sent after the page view
    in call order, sharing its visitor and ``pv_id``), or ``skip()`` the request.
    """

    __slots__ = (
        "_custom",
        "_extra",
        "_page",
        "_skipped",
        "action_name",
        "dimensions",
        "max_custom_variables",
        "page_variables",
        "referrer",
        "url",
        "user_id",
        "visit_variables",
        "visitor_id",
    )

    def __init__(self, *, max_custom_variables: int = 5) -> None:
        self.action_name: str | None = None
        self.url: str | None = None
        self.referrer: str | None = None
        self.user_id: str | None = None
        self.visitor_id: str | None = None
        self.dimensions: dict[int, str] = {}
        self.page_variables: dict[int, tuple[str, str]] = {}
        self.visit_variables: dict[int, tuple[str, str]] = {}
        self.max_custom_variables = max_custom_variables
        self._page: dict[str, str] = {}
        self._extra: list[dict[str, str]] = []
        self._custom: dict[str, str] = {}
        self._skipped = False

    def __repr__(self) -> str:
        return (
            f"TrackingContext(action_name={self.action_name!r}, skipped={self._skipped}, "
            f"extra_hits={len(self._extra)})"
        )

    # -- the page view -------------------------------------------------------------------
    def skip(self) -> None:
        """Do not track this request (nor any hit added to it)."""
        self._skipped = True

    @property
    def skipped(self) -> bool:
        """Whether ``skip()`` was called."""
        return self._skipped

    def set_action_name(self, name: str) -> None:
        """The page title Matomo shows for this page view."""
        self.action_name = name

    def set_user_id(self, user_id: str | None) -> None:
        """The logged-in user's id (``uid``), cut to 200 characters; None clears it."""
        self.user_id = None if user_id is None else clean_text(str(user_id), MAX_USER_ID_CHARS)

    def set_visitor_id(self, visitor_id: str) -> None:
        """Force the visitor id (16 hexadecimal characters)."""
        if not isinstance(visitor_id, str) or not valid_visitor_id(visitor_id):
            raise ValueError(f"visitor_id={visitor_id!r} is invalid: expected 16 hex characters")
        self.visitor_id = visitor_id.lower()

    def set_dimension(self, dimension_id: int, value: str) -> None:
        """Custom dimension ``dimension<id>`` for this request's hits (cut to 250 chars)."""
        if isinstance(dimension_id, bool) or not isinstance(dimension_id, int) or dimension_id < 1:
            raise ValueError(f"dimension_id={dimension_id!r} is invalid: expected an int >= 1")
        self.dimensions[dimension_id] = clean_text(str(value), MAX_DIMENSION_CHARS)

    def set_custom_variable(self, slot: int, name: str, value: str, scope: str = "page") -> None:
        """A legacy custom variable in ``page`` (``cvar``) or ``visit`` (``_cvar``) scope.

        Slots run from 1 to ``max_custom_variables`` (default 5); needs Matomo's
        CustomVariables plugin.
        """
        if (
            isinstance(slot, bool)
            or not isinstance(slot, int)
            or not 1 <= slot <= self.max_custom_variables
        ):
            raise ValueError(
                f"slot={slot!r} is invalid: expected 1 to {self.max_custom_variables}"
                " (raise max_custom_variables to use more slots)"
            )
        if scope == "page":
            self.page_variables[slot] = (name, value)
        elif scope == "visit":
            self.visit_variables[slot] = (name, value)
        else:
            raise ValueError(f"scope={scope!r} is invalid: expected 'page' or 'visit'")

    def set_custom_tracking_parameter(self, name: str, value: object) -> None:
        """Send parameter ``name`` with every hit of this request (None removes it): for Matomo
        plugins and parameters without a method here (PHP: ``setCustomTrackingParameter``).
        Refused, naming the right method: ``token_auth``, ``send_image`` and the parameters
        matomo-middleware sets itself."""
        if value is None:
            actions.custom_parameter(name, "")
            self._custom.pop(name, None)
        else:
            self._custom[name] = actions.custom_parameter(name, value)

    @property
    def custom_parameters(self) -> Mapping[str, str]:
        """The custom tracking parameters every hit of this request carries."""
        return self._custom

    def track_product_view(
        self,
        *,
        sku: str | None = None,
        name: str | None = None,
        category: Category | None = None,
        price: Number | None = None,
    ) -> None:
        """Mark this page view as a product (or category) page."""
        self._page.update(
            actions.product_view_params(sku=sku, name=name, category=category, price=price)
        )

    @property
    def page_params(self) -> Mapping[str, str]:
        """Extra parameters for the page view (product view fields)."""
        return self._page

    # -- more hits in the same visit ------------------------------------------------------
    @property
    def extra_hits(self) -> list[dict[str, str]]:
        """Parameters of the hits added so far, in call order."""
        return self._extra

    def track_event(
        self, category: str, action: str, name: str | None = None, value: Number | None = None
    ) -> None:
        """An event (``e_c``, ``e_a``, ``e_n``, ``e_v``)."""
        self._extra.append(actions.event_params(category, action, name, value))

    def track_site_search(
        self, keyword: str, category: str | None = None, count: int | None = None
    ) -> None:
        """A site search (``search``, ``search_cat``, ``search_count``)."""
        self._extra.append(actions.site_search_params(keyword, category, count))

    def track_goal(self, goal_id: int, revenue: Number | None = None) -> None:
        """A goal conversion (``idgoal``, ``revenue``)."""
        self._extra.append(actions.goal_params(goal_id, revenue))

    def track_ecommerce_order(
        self,
        order_id: str,
        revenue: Number,
        *,
        items: Items = (),
        subtotal: Number | None = None,
        tax: Number | None = None,
        shipping: Number | None = None,
        discount: Number | None = None,
    ) -> None:
        """An ecommerce order (``ec_id`` required)."""
        self._extra.append(
            actions.order_params(
                order_id,
                revenue,
                items=items,
                subtotal=subtotal,
                tax=tax,
                shipping=shipping,
                discount=discount,
            )
        )

    def track_ecommerce_cart_update(self, revenue: Number, *, items: Items = ()) -> None:
        """A cart update with the whole current cart."""
        self._extra.append(actions.cart_update_params(revenue, items=items))

    def track_content_impression(
        self, name: str, piece: str | None = None, target: str | None = None
    ) -> None:
        """A content impression."""
        self._extra.append(actions.content_impression_params(name, piece, target))

    def track_content_interaction(
        self, interaction: str, name: str, piece: str | None = None, target: str | None = None
    ) -> None:
        """A content interaction."""
        self._extra.append(actions.content_interaction_params(interaction, name, piece, target))

    def track_link(self, url: str) -> None:
        """An outlink to ``url``."""
        self._extra.append(actions.link_params(url))

    def track_download(self, url: str) -> None:
        """A download of ``url``."""
        self._extra.append(actions.download_params(url))

    def ping(self) -> None:
        """A heartbeat in this visit."""
        self._extra.append(actions.ping_params())
