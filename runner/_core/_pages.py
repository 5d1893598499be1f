"""The HTML page and headers a login's listener answers a verdict with. Pure.

The child's HTTP server judges each request with ``runner._core._callback.judge_request`` and
writes the status and page :func:`render_page` returns, with :func:`response_headers`.

Invariants:

* Every value that reaches a page is ``html.escape``'d (``quote=True``), in one place
  (``_page``); a page loads nothing and runs nothing: no script, no link, no external
  resource, and a Content-Security-Policy that allows only its own inline style (by hash).
* Every page is ``no-store`` and ``no-referrer``: the address it answers carries the code.
* No module state: constants only (immutable).

Decisions:

* A ``Denied`` page is a 200: the request was well formed and ended the login; a 4xx is
  kept for responses that were turned away.
* ``error_uri`` is shown as text, never as a link.
"""

from __future__ import annotations

import base64
import hashlib
import html
import types
from collections.abc import Mapping
from typing import Final

from runner._core._callback import Accepted, Denied, Rejected, Verdict

__all__ = ["RESPONSE_HEADERS", "render_page", "response_headers"]

_STYLE: Final[str] = (
    "body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;"
    "color:#222;line-height:1.5}h1{font-size:1.4em}code{background:#f2f2f2;padding:0 .2em}"
)
_STYLE_HASH: Final[str] = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

RESPONSE_HEADERS: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ),
    }
)
"""Headers for every page this listener writes (immutable)."""


def response_headers(verdict: Verdict) -> Mapping[str, str]:
    """:data:`RESPONSE_HEADERS`, plus ``Allow: GET`` on a 405 (RFC 9110 §15.5.6) and
    ``Retry-After: 1`` on a 503."""
    if isinstance(verdict, Rejected) and verdict.status == 405:
        return types.MappingProxyType({**RESPONSE_HEADERS, "Allow": "GET"})
    if isinstance(verdict, Rejected) and verdict.status == 503:
        return types.MappingProxyType({**RESPONSE_HEADERS, "Retry-After": "1"})
    return RESPONSE_HEADERS


_STATUS_TITLES: Final[Mapping[int, str]] = types.MappingProxyType(
    {
        400: "This is not a valid callback for this login",
        404: "Not found",
        405: "Method not allowed",
        414: "Address too long",
        503: "Not ready yet",
    }
)


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def _page(title: str, paragraphs: list[str]) -> str:
    """A whole page; ``title`` and ``paragraphs`` are escaped here, nowhere else."""
    body = "".join(f"<p>{_esc(p)}</p>" for p in paragraphs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_esc(title)}</h1>{body}</body></html>\n"
    )


def render_page(verdict: Verdict) -> tuple[int, str]:
    """The HTTP status and the full HTML page for a verdict.

    Every interpolated value is escaped with ``html.escape(quote=True)``; the page has no
    script, no link and no external resource. Send it with :func:`response_headers`.
    """
    if isinstance(verdict, Accepted):
        return 200, _page(
            "Login complete",
            ["You can close this tab and return to the application."],
        )
    if isinstance(verdict, Denied):
        paragraphs = [f"The authorization server did not authorize this login: {verdict.error}"]
        if verdict.description:
            paragraphs.append(f"It said: {verdict.description}")
        if verdict.uri:
            paragraphs.append(f"More information: {verdict.uri}")
        paragraphs.append("You can close this tab.")
        return 200, _page("Login not authorized", paragraphs)
    title = _STATUS_TITLES.get(verdict.status, f"Error {verdict.status}")
    paragraphs = [verdict.reason]
    if verdict.status == 400:
        paragraphs.append("The login is still waiting for its callback.")
    return verdict.status, _page(title, paragraphs)
