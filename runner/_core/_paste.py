"""Reading what a person pasted as an OAuth callback. Pure.

When the browser cannot reach a login's listener, the person pastes the address it was sent
to. :func:`parse_paste` reads that text; the parent uses it to learn which login a paste
belongs to (``runner._core._routing``), and the login's child reads the forwarded paste with it
again before judging it (``runner._core._callback.judge_paste``).

Invariants:

* A :class:`PastedCallback` always carries exactly one non-empty ``state`` and a ``code`` or
  an ``error``; anything else is a :class:`PasteProblem` whose message says what to paste
  instead. Neither is a verdict: only ``runner._core._callback`` decides whether a paste finishes
  a login.
* The work done on any text is bounded: text longer than a callback URL could be (with
  room for a terminal's wrapping) is refused before anything else is done with it, and
  wrappers are peeled in linear time.
* A message never quotes the paste (it may hold the authorization code), and no ``repr``
  shows a query or a state.
* No module state: constants only (immutable).

Decisions:

* Forms read: a full callback URL (the scheme may be missing when it starts with a loopback
  host, ``runner._core._loopback``), ``/path?query``, a bare query, or one starting with ``?``.
* Surrounding whitespace, quotes and angle brackets are dropped in layers, and so is any
  whitespace inside (a URL has none; a terminal may wrap one). A fragment is ignored.
* The URL's host and port are recorded, not checked: the browser may have been sent to a
  port nobody listened on, which is why the person pastes.
* The query is split by ``runner._core._callback_query``, exactly as the child will judge it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

from runner._core._callback_query import MAX_QUERY_BYTES, parse_query
from runner._core._loopback import LOOPBACK_NETLOC_HOSTS

__all__ = ["PASTE_HINT", "PasteProblem", "PastedCallback", "parse_paste"]

_MAX_PASTE_CHARS: Final[int] = 2 * MAX_QUERY_BYTES
# What a paste may be before whitespace and wrappers are dropped: room for a terminal that
# wrapped or indented the URL, and a bound on the work done on any paste.
_MAX_PASTE_INPUT_CHARS: Final[int] = 4 * _MAX_PASTE_CHARS
_REDACTED: Final[str] = "<redacted>"

_WRAPPERS: Final[tuple[tuple[str, str], ...]] = (
    ('"', '"'),
    ("'", "'"),
    ("`", "`"),
    ("<", ">"),
    ("\u201c", "\u201d"),
    ("\u2018", "\u2019"),
)

PASTE_HINT: Final[str] = (
    "paste the whole address from the browser's address bar, "
    "starting with http://127.0.0.1 (or http://localhost)"
)
"""What to paste instead; every :class:`PasteProblem` message but a blank one ends with it."""


@dataclass(frozen=True, slots=True)
class PastedCallback:
    """A paste that looks like a callback.

    Attributes:
        query: the query string, still percent-encoded, without ``?`` or fragment.
        state: the decoded ``state`` parameter (present: a paste without one is a
            :class:`PasteProblem`; typed optional for callers that build their own).
        path: the path if the paste named one (a full URL or ``/path?query``), else None.
        host: the URL's host, lower-case and without brackets, if a URL was pasted.
        port: the URL's explicit port, if any.
    """

    query: str
    state: str | None
    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __repr__(self) -> str:
        state = None if self.state is None else _REDACTED
        return (
            f"PastedCallback(query={_REDACTED}, state={state}, path={self.path!r}, "
            f"host={self.host!r}, port={self.port!r})"
        )


@dataclass(frozen=True, slots=True)
class PasteProblem:
    """A paste that is not a callback; ``message`` says what to paste instead.

    An empty ``message`` means the paste was blank (the user pressed Enter): nothing to say.
    """

    message: str


def _unwrap(text: str) -> str:
    """Drop whitespace and matching quotes/angle brackets around ``text``, repeatedly.

    Moves two indices inward and slices once: slicing and stripping on every layer made
    ``'<' * n + '>' * n`` cost O(n**2) (a 1 MB paste took minutes). Each pass consumes at
    least two characters or ends the loop, so it runs at most ``len(text) // 2 + 1`` times.
    """
    start, end = 0, len(text)
    for _ in range(len(text) // 2 + 1):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        for opening, closing in _WRAPPERS:
            if (
                end - start >= len(opening) + len(closing)
                and text.startswith(opening, start, end)
                and text.endswith(closing, start, end)
            ):
                start += len(opening)
                end -= len(closing)
                break
        else:
            break
    return text[start:end]


def _has_scheme(text: str) -> bool:
    """``text`` starts with ``scheme://`` (not merely contains it, as an unencoded iss may)."""
    head, sep, _ = text.partition("://")
    return bool(sep) and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head) is not None


def parse_paste(text: str) -> PastedCallback | PasteProblem:
    """Read what a person pasted as a callback.

    Accepted forms: a full callback URL (``http://127.0.0.1:5555/callback?code=..&state=..``,
    the scheme may be missing), ``/callback?code=..``, a bare query string, or one starting
    with ``?``. Surrounding whitespace, quotes and angle brackets are dropped, and so is any
    whitespace inside (a URL has none; a terminal may wrap one). A fragment is ignored.

    Returns:
        A :class:`PastedCallback` carrying a state and a ``code`` or an ``error``; otherwise a
        :class:`PasteProblem` whose message says what to paste (empty for a blank paste).
    """
    if len(text) > _MAX_PASTE_INPUT_CHARS:
        return PasteProblem(f"that paste is too long to be a callback URL; {PASTE_HINT}")
    text = "".join(_unwrap(text).split())
    if not text:
        return PasteProblem("")
    if len(text) > _MAX_PASTE_CHARS:
        return PasteProblem(f"that paste is too long to be a callback URL; {PASTE_HINT}")

    path: str | None = None
    host: str | None = None
    port: int | None = None
    if text.startswith("?"):
        query = text[1:]
    elif text.startswith("/"):
        path, _, query = text.partition("?")
    elif _has_scheme(text) or text.lower().startswith(LOOPBACK_NETLOC_HOSTS):
        url = text if _has_scheme(text) else "http://" + text
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            return PasteProblem(f"that address could not be read as a URL; {PASTE_HINT}")
        if parts.scheme.lower() not in ("http", "https"):
            return PasteProblem(
                f"that is a {parts.scheme or 'scheme-less'} address, not a callback URL; "
                f"{PASTE_HINT}"
            )
        query, path, host = parts.query, parts.path or "/", parts.hostname
    else:
        query = text
    query = query.partition("#")[0]

    if "=" not in query:
        return PasteProblem(
            f"that does not look like a callback URL: it has no parameters; {PASTE_HINT}"
        )
    try:
        pairs = parse_query(query)
    except ValueError:
        return PasteProblem(
            f"that callback URL is malformed (its parameters cannot be read); {PASTE_HINT}"
        )
    states = [value for name, value in pairs if name == "state"]
    if not states or not states[0]:
        return PasteProblem(
            f"that does not look like a callback URL: it has no state parameter; {PASTE_HINT}"
        )
    if len(states) > 1:
        return PasteProblem(f"that callback URL has more than one state parameter; {PASTE_HINT}")
    names = {name for name, _ in pairs}
    if "code" not in names and "error" not in names:
        return PasteProblem(
            "that URL has a state but neither a code nor an error: the login has not "
            f"finished in the browser yet; {PASTE_HINT} once it has"
        )
    return PastedCallback(query=query, state=states[0], path=path, host=host, port=port)
