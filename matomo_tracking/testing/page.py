"""The collector's live page: what a new user looks at first (``python3 dev.py demo --serve``).

One HTML page with no script and no dependency, refreshing itself every two seconds: the
tracked and invalid counts, the latest hits (each with its type — page view, event, site
search, goal, ecommerce, content, download, outlink, ping — and the response status where the
hit carries it), and the rejected hits with the reason Matomo would give. A click on a hit
opens a page of every parameter it carried (``token_auth`` masked). Every value is escaped.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["detail_page", "hit_facts", "hit_type", "live_page"]

#: How many of the latest hits (and rejected hits) the live page lists.
LISTED = 200
_MASK = "••••••"  # what a token_auth shows as
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1em 2em}td,th{padding:2px 8px;"
    "text-align:left;vertical-align:top}tr:nth-child(even){background:#f4f4f4}"
    ".type{white-space:nowrap}.bad{color:#a00}#counts span{margin-right:1.5em}"
    "code{overflow-wrap:anywhere}"
)


class _Hit(Protocol):
    @property
    def params(self) -> Mapping[str, str]: ...
    @property
    def received_at(self) -> float: ...
    @property
    def recorded_at(self) -> float: ...
    @property
    def bulk(self) -> bool: ...
    @property
    def authenticated(self) -> bool: ...


def hit_type(params: Mapping[str, Any]) -> str:
    """What a hit is, in Matomo's words: ``ping``, ``ecommerce``, ``goal``, ``event``,
    ``content``, ``site search``, ``download``, ``outlink``, ``custom action`` or
    ``page view`` (checked in that order, as Matomo decides what a request records)."""
    if params.get("ping") == "1":
        return "ping"
    goal = params.get("idgoal")
    if goal is not None and goal != "":
        return "ecommerce" if goal == "0" else "goal"
    if params.get("e_c") and params.get("e_a"):
        return "event"
    if params.get("c_n"):
        return "content"
    if params.get("search") is not None:
        return "site search"
    if params.get("download"):
        return "download"
    if params.get("link"):
        return "outlink"
    if params.get("ca") == "1":
        return "custom action"
    return "page view"


def _what(params: Mapping[str, Any], kind: str) -> str:
    """The name a row shows for a hit: its title, event, keyword, content or link."""
    if kind == "event":
        parts = (params.get("e_c"), params.get("e_a"), params.get("e_n"))
        return " / ".join(str(p) for p in parts if p)
    if kind == "site search":
        return str(params.get("search", ""))
    if kind == "content":
        return " / ".join(str(params[k]) for k in ("c_n", "c_p", "c_i") if params.get(k))
    if kind in ("download", "outlink"):
        return str(params.get("download") or params.get("link") or "")
    if kind == "goal":
        return f"goal {params.get('idgoal')}"
    if kind == "ecommerce":
        order = params.get("ec_id")
        return f"order {order}" if order else "cart update"
    return str(params.get("action_name") or "")


def _status(params: Mapping[str, Any], status_dimension: int | None) -> str:
    """The response status the hit carries: ``http_status`` (bot reports), else the status
    dimension when the collector was told which one it is."""
    status = params.get("http_status")
    if not status and status_dimension is not None:
        status = params.get(f"dimension{status_dimension}")
    return str(status or "")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def _head(title: str, refresh: bool) -> str:
    meta = "<meta http-equiv='refresh' content='2'>" if refresh else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}<title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body>"
    )


def live_page(
    hits: Sequence[_Hit],
    invalid: Sequence[tuple[Mapping[str, Any], str]],
    *,
    status_dimension: int | None = None,
) -> str:
    """The live page: counts, the latest hits, the rejected hits (newest first)."""
    rows = []
    first = max(0, len(hits) - LISTED)
    for index in range(len(hits) - 1, first - 1, -1):
        hit = hits[index]
        p = hit.params
        kind = hit_type(p)
        status = _status(p, status_dimension)
        bad = " class='bad'" if status[:1] in ("4", "5") else ""
        rows.append(
            f"<tr><td>{_clock(hit.recorded_at)}</td>"
            f"<td><a href='/hit/{index}'>{_e(_what(p, kind) or '(no name)')}</a></td>"
            f"<td class='type'>{_e(kind)}</td><td>{_e(p.get('url', ''))}</td>"
            f"<td{bad}>{_e(status)}</td><td>{_e(p.get('pf_srv', ''))}</td>"
            f"<td>{_e(p.get('uid') or p.get('cid') or p.get('_id') or '')}</td></tr>"
        )
    rejected = []
    first = max(0, len(invalid) - LISTED)
    for index in range(len(invalid) - 1, first - 1, -1):
        params, reason = invalid[index]
        kind = hit_type(params)
        rejected.append(
            f"<tr><td class='bad'><a href='/rejected/{index}'>{_e(reason)}</a></td>"
            f"<td class='type'>{_e(kind)}</td><td>{_e(_what(params, kind))}</td>"
            f"<td>{_e(params.get('url', ''))}</td><td>{_e(params.get('idsite', ''))}</td></tr>"
        )
    return (
        _head("Matomo collector", refresh=True)
        + f"<h1>Matomo collector</h1><p id='count'>{len(hits)} hit(s) received</p>"
        + f"<p id='counts'><span>tracked: <strong id='tracked'>{len(hits)}</strong></span>"
        + f"<span>invalid: <strong id='invalid'>{len(invalid)}</strong></span></p>"
        + "<table id='hits'><tr><th>time</th><th>action</th><th>type</th><th>url</th>"
        + "<th>status</th><th>pf_srv</th><th>visitor</th></tr>"
        + "".join(rows)
        + "</table><h2>Rejected hits</h2>"
        + "<p>What Matomo would refuse, with its reason (a click shows every parameter).</p>"
        + "<table id='rejected'><tr><th>reason</th><th>type</th><th>action</th><th>url</th>"
        + "<th>idsite</th></tr>"
        + "".join(rejected)
        + "</table></body></html>"
    )


def detail_page(
    params: Mapping[str, Any],
    facts: Sequence[tuple[str, str]],
    *,
    title: str,
) -> str:
    """One hit's page: ``facts`` (type, status, times, reason...) and every parameter,
    sorted by name, ``token_auth`` masked."""
    fact_rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    rows = []
    for key in sorted(params):
        value = _MASK if key == "token_auth" else params[key]
        rows.append(f"<tr><th><code>{_e(key)}</code></th><td><code>{_e(value)}</code></td></tr>")
    return (
        _head(title, refresh=False)
        + f"<p><a href='/'>← all hits</a></p><h1>{_e(title)}</h1>"
        + f"<table id='facts'>{fact_rows}</table><h2>Parameters</h2>"
        + f"<table id='params'>{''.join(rows)}</table></body></html>"
    )


def hit_facts(hit: _Hit, status_dimension: int | None) -> list[tuple[str, str]]:
    """What the detail page of an accepted hit states besides its parameters."""
    return [
        ("type", hit_type(hit.params)),
        ("status", _status(hit.params, status_dimension) or "(not carried)"),
        ("received", _clock(hit.received_at)),
        ("recorded at", _clock(hit.recorded_at)),
        ("request", "bulk" if hit.bulk else "single"),
        ("authenticated", "yes" if hit.authenticated else "no"),
    ]
