"""The query-string syntax of an OAuth callback, shared by judging and paste reading. Pure.

``runner._core._callback`` judges a query that reached the listener or was pasted;
``runner._core._paste`` reads a paste to learn its state. Both split the query here, so a paste
the parent routes is read exactly as the child will judge it.

Decisions:

* Parsed leniently in structure (empty ``&&`` segments are skipped, a name without ``=``
  has an empty value, as browsers and servers produce them) but strictly in content: a
  percent-encoded sequence that is not UTF-8, or more than :data:`MAX_QUERY_FIELDS` fields,
  is a ``ValueError``.
* Whether a parameter may repeat is the caller's decision, not the syntax's.

Invariants: standard library only; constants only (immutable).
"""

from __future__ import annotations

import urllib.parse
from typing import Final

__all__ = ["MAX_QUERY_BYTES", "MAX_QUERY_FIELDS", "parse_query"]

MAX_QUERY_BYTES: Final[int] = 8192
"""Largest query (UTF-8 bytes) judged; a larger one is a 414."""

MAX_QUERY_FIELDS: Final[int] = 64
"""Most ``name=value`` fields a query may have; more is unreadable (bounds the work)."""


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Split a query into decoded pairs, in order. Raises ValueError (incl. UnicodeDecodeError)."""
    return urllib.parse.parse_qsl(
        raw_query,
        keep_blank_values=True,
        strict_parsing=False,
        encoding="utf-8",
        errors="strict",
        max_num_fields=MAX_QUERY_FIELDS,
    )
