"""Concurrent MCP OAuth logins, each in its own child process on its own leased port.

>>> results = await authorize_many(servers, store=TokenStore(dir))  # doctest: +SKIP
>>> async with Runner(store=TokenStore(dir)) as runner:  # a host's, for its lifetime
...     results = await runner.authorize_many(servers)  # doctest: +SKIP

Guarantees (see ``docs/architecture.md`` for how): every server gets a ``FlowResult``;
one login's failure never touches another's; nothing outlives its timeout; on return no
child process and no port lease of the call is left. Errors live in ``runner.errors``.

>>> result = await logout("notes", store=TokenStore(dir))  # doctest: +SKIP
>>> result = logout_sync("notes", store=TokenStore(dir))  # without an event loop

``logout`` revokes the stored tokens at the server (RFC 7009; refresh token first, with the
client's own authentication, only at the revocation endpoint of the issuer that granted
them), then removes the login's files, all under the server's login lock. The files go
whatever the server answered; a ``LogoutResult`` says per token (``TokenOutcome``) what was
revoked and why not, and a ``RevocationWarning`` names each token that may still be alive.
Only a file read back as a login is removed (else ``NotALoginFile``, left alone); a token
directory that is a symlink is refused.

The public names are loaded on first use (PEP 562): a login's child process imports
``runner._child._login``, and must not pay for (or depend on) the parent's supervisor and
``portlease`` just because this package's ``__init__`` ran first.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner._core._revocation import LogoutResult, TokenOutcome
    from runner._core._spec import FlowResult, ServerSpec
    from runner._hosts._provider import RunnerProvider, provider
    from runner._parent._logout import logout, logout_sync
    from runner._parent._runner import Runner, authorize_many, authorize_many_sync
    from runner._stores._token_store import TokenStore

__all__ = [
    "FlowResult",
    "LogoutResult",
    "Runner",
    "RunnerProvider",
    "ServerSpec",
    "TokenOutcome",
    "TokenStore",
    "authorize_many",
    "authorize_many_sync",
    "logout",
    "logout_sync",
    "provider",
]

# Where each public name lives: a constant table, not state (nothing is cached here;
# importlib's own module cache makes the second lookup cheap).
_HOMES = types.MappingProxyType(
    {
        "FlowResult": "runner._core._spec",
        "LogoutResult": "runner._core._revocation",
        "Runner": "runner._parent._runner",
        "RunnerProvider": "runner._hosts._provider",
        "ServerSpec": "runner._core._spec",
        "TokenOutcome": "runner._core._revocation",
        "TokenStore": "runner._stores._token_store",
        "authorize_many": "runner._parent._runner",
        "authorize_many_sync": "runner._parent._runner",
        "logout": "runner._parent._logout",
        "logout_sync": "runner._parent._logout",
        "provider": "runner._hosts._provider",
    }
)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
