"""Where each server's tokens, client registration and server metadata live between runs.

Public: ``TokenStore`` (one 0600 file per server, written atomically, with each server's
login lock) and the record it keeps, ``StoredLogin``. The store's errors are in
``runner.errors`` (``TokenStoreError``, ``LoginLockTimeout``, ``TokenStoreWarning``) and are
also importable from here, where they used to live. ``runner.hermes_store`` has the store of
hermes-agent's own files; ``TokenStore.storage(name)`` the SDK's ``TokenStorage`` protocol
over one server's file. Each class's docstring says what it guarantees.
"""

from __future__ import annotations

from runner._core._stored import STORE_VERSION, InvalidLoginRecord, StoredLogin
from runner._stores._sdk_storage import StoreTokenStorage
from runner._stores._token_store import MAX_TOKEN_FILE_BYTES, TokenStore, default_store_dir
from runner.errors import LoginLockTimeout, TokenStoreError, TokenStoreWarning

__all__ = [
    "MAX_TOKEN_FILE_BYTES",
    "STORE_VERSION",
    "InvalidLoginRecord",
    "LoginLockTimeout",
    "StoreTokenStorage",
    "StoredLogin",
    "TokenStore",
    "TokenStoreError",
    "TokenStoreWarning",
    "default_store_dir",
]
