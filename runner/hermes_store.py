"""hermes-agent's token files (``HERMES_HOME/mcp-tokens/``) behind ``TokenStore``'s interface.

Public: ``HermesTokenStore`` reads and writes exactly the files hermes-agent reads and writes,
under hermes's own refresh lock; its docstring and module (``runner._stores._hermes_store``)
say how.
"""

from __future__ import annotations

from runner._stores._hermes_store import TOKEN_DIR_NAME, HermesTokenStore, registered_port

__all__ = ["TOKEN_DIR_NAME", "HermesTokenStore", "registered_port"]
