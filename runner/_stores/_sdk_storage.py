"""The SDK's ``TokenStorage`` protocol over one server's record in a token store.

For hosts that build their own ``OAuthClientProvider`` over the same files as the runner
(``TokenStore.storage(name)``); ``runner.provider`` builds one that also renews under the
server's lock and logs in through the runner.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Protocol, TypeVar

from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from mcp.shared.auth_utils import calculate_token_expiry

from runner._core._stored import StoredLogin
from runner._io._threads import in_daemon_thread
from runner.errors import TokenStoreError

__all__ = ["RecordStore", "StoreTokenStorage"]

_T = TypeVar("_T")


class RecordStore(Protocol):
    """What ``StoreTokenStorage`` needs of a store (``TokenStore``, ``HermesTokenStore``)."""

    def path_for(self, name: str) -> os.PathLike[str]: ...
    def load(self, name: str) -> StoredLogin | None: ...
    def save(self, name: str, login: StoredLogin) -> object: ...


class StoreTokenStorage:
    """The SDK's ``TokenStorage`` over one server's file in a ``TokenStore``
    (``TokenStore.storage(name)``), for hosts that build their own ``OAuthClientProvider``.

    Every write is a whole record saved through ``TokenStore.save`` (atomic, 0600); file I/O
    runs in a daemon thread, never on the event loop. ``set_tokens`` keeps the stored
    registration and server metadata and records the new expiry. A client registration set
    before any tokens exist is held in memory until ``set_tokens`` writes the first record,
    which needs ``server_url`` (given, or the stored record's).

    It does not take the server's login lock: a provider of the host's own making does not
    coordinate with other processes (``runner.provider`` does).

    Raises (from its methods): ``TokenStoreError`` as ``TokenStore`` does, and when
    ``set_tokens`` has no record to extend and no ``server_url``.
    """

    def __init__(self, store: RecordStore, name: str, *, server_url: str | None = None) -> None:
        store.path_for(name)  # InvalidServerSpec now, not at the first write
        self.store = store
        self.name = name
        self.server_url = server_url
        self._pending_client: OAuthClientInformationFull | None = None

    def __repr__(self) -> str:
        return f"StoreTokenStorage({self.store!r}, {self.name!r})"

    async def get_tokens(self) -> OAuthToken | None:
        stored = await self._load()
        return stored.tokens if stored is not None else None

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        stored = await self._load()
        if stored is not None and stored.client_info is not None:
            return stored.client_info
        return self._pending_client

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await self._in_thread(functools.partial(self._write, tokens, self._pending_client))
        self._pending_client = None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self._pending_client = client_info
        await self._in_thread(functools.partial(self._write, None, client_info))

    async def _load(self) -> StoredLogin | None:
        return await self._in_thread(functools.partial(self.store.load, self.name))

    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        return await in_daemon_thread(f"runner-store-{self.name}", call)

    def _write(
        self, tokens: OAuthToken | None, client_info: OAuthClientInformationFull | None
    ) -> bool:
        """In a daemon thread: the stored record with ``tokens`` and/or ``client_info``
        replaced, saved; False when there is no record yet and no tokens to start one."""
        stored = self.store.load(self.name)
        if tokens is not None:
            expires_at = calculate_token_expiry(tokens.expires_in)
        elif stored is not None:
            tokens, expires_at = stored.tokens, stored.expires_at
        else:
            return False  # a registration alone: kept in memory until the tokens come
        server_url = self.server_url or (stored.server_url if stored is not None else None)
        if server_url is None:
            raise TokenStoreError(
                self.store.path_for(self.name),
                f"{self.name}: no stored login to add these tokens to and no server_url; "
                "pass server_url to TokenStore.storage",
            )
        if client_info is None and stored is not None:
            client_info = stored.client_info
        login = StoredLogin(
            server_url=server_url,
            tokens=tokens,
            expires_at=expires_at,
            client_info=client_info,
            oauth_metadata=stored.oauth_metadata if stored is not None else None,
        )
        self.store.save(self.name, login)
        return True
