"""Concurrent MCP OAuth logins, each in its own child process on its own leased port.

>>> results = await authorize_many(servers, store=TokenStore(dir))  # doctest: +SKIP

Guarantees (see ``runner.flows`` for how): every server gets a ``FlowResult``; one
login's failure never touches another's; nothing outlives its timeout; on return no
child process and no port lease of the call is left. Errors live in ``runner.errors``.
"""

from runner.flows import authorize_many, authorize_many_sync
from runner.spec import FlowResult, ServerSpec
from runner.store import TokenStore

__all__ = ["FlowResult", "ServerSpec", "TokenStore", "authorize_many", "authorize_many_sync"]
