"""The loopback hosts a login's redirect URI may name, and how each is spelled. Pure.

The one table of loopback host spellings in ``runner`` (RFC 8252 §7.3): ``ServerSpec``
validates ``redirect_host`` against it, the child's listener derives the ``Host`` header it
answers to from it, and the paste reader recognises a pasted address by it.

Three spellings of a host matter:

* the **canonical** host: lower-case, an IPv6 literal without its brackets (``"::1"``);
  :data:`LOOPBACK_HOSTS` lists these, and :func:`canonical_host` produces one;
* the **netloc** host, as a URL and a ``Host`` header write it: an IPv6 literal in brackets
  (``"[::1]"``, RFC 3986 §3.2.2); :func:`netloc_host` produces one;
* the host as a person or a configuration wrote it (``"LOCALHOST"``, ``"[::1]"``): what
  :func:`canonical_host` reads.

Invariants:

* Standard library only, no module state (the table is a tuple): the child and the parent
  both import it, so it drags nothing into either.
* Only an IPv6 literal loses its brackets: ``"[127.0.0.1]"`` is not a URL's way of writing
  ``127.0.0.1``, so it stays as written and is no loopback host.

Not covered, on purpose: ``portlease`` keeps its own table (``portlease/records.py``: which
address each host binds, and how a lease records it), because ``portlease`` never imports
``runner``; ``runner.sandbox`` serves on ``127.0.0.1`` only and spells it out.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_LOOPBACK_HOST",
    "LOOPBACK_HOSTS",
    "LOOPBACK_NETLOC_HOSTS",
    "canonical_host",
    "netloc_host",
]

LOOPBACK_HOSTS: Final[tuple[str, ...]] = ("127.0.0.1", "::1", "localhost")
"""The accepted loopback hosts, canonical, in the order messages list them."""

DEFAULT_LOOPBACK_HOST: Final[str] = "127.0.0.1"
"""The host a redirect URI names unless told otherwise (RFC 8252 §8.3 prefers the literal)."""


def canonical_host(host: str) -> str:
    """``host`` lower-case, and without brackets if it is a bracketed IPv6 literal.

    Any host is accepted; the result is a loopback host if it is in :data:`LOOPBACK_HOSTS`.
    ``"[::1]"`` -> ``"::1"``, ``"LocalHost"`` -> ``"localhost"``.
    """
    lowered = host.lower()
    if lowered.startswith("[") and lowered.endswith("]") and ":" in lowered:
        return lowered[1:-1]
    return lowered


def netloc_host(host: str) -> str:
    """``host`` as a URL's netloc (and so a ``Host`` header) writes it: ``"::1"`` -> ``"[::1]"``."""
    canonical = canonical_host(host)
    return f"[{canonical}]" if ":" in canonical else canonical


LOOPBACK_NETLOC_HOSTS: Final[tuple[str, ...]] = tuple(netloc_host(h) for h in LOOPBACK_HOSTS)
""":data:`LOOPBACK_HOSTS` as a URL writes them: ``("127.0.0.1", "[::1]", "localhost")``."""
