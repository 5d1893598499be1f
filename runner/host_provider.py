"""A host's MCP client between logins: the SDK's ``OAuthClientProvider``, kept by the runner.

(This module is not called ``runner.provider``: a submodule of that name would replace the
function ``runner.provider`` as the package's attribute as soon as anything imported it.)

``runner.provider(spec)`` returns an ``OAuthClientProvider`` (``RunnerProvider``) to pass as
``auth=`` to the SDK's own HTTP client (``httpx2.AsyncClient`` on mcp 2.x, then
``streamable_http_client(url, http_client=...)``). It is restored from the token store and
keeps it current; ``TokenStore.storage(name)`` (``StoreTokenStorage``) is the SDK's
``TokenStorage`` protocol over the same file, for hosts that build their own provider.

Guarantees:

- restored from the store: tokens, their expiry, the client registration and the server's
  metadata are put back (without the expiry and metadata a new SDK provider over expired
  tokens starts a browser login instead of refreshing: upstream issue #3250), first when
  the provider is used, and again whenever it needs new tokens;
- before a request whose access token is expired or about to be (``margin`` seconds, at
  most a quarter of the token's lifetime): the server's login lock is taken
  (``TokenStore.hold``, across processes), the store is read again, and only if the token
  there is still not valid is it refreshed (``runner.refresh.refresh_login``) and saved
  (atomically, 0600). A refresh token that a sibling process has just rotated is adopted,
  never replayed: N processes with one expired token make one refresh grant;
- on a 401, or when the store holds nothing usable: the same, with the refused access token
  counted as dead; when no refresh works, a login through the runner (``authorize_many``:
  a child process on a leased port, single flight across processes), whose tokens are
  adopted; the request is then sent once more, and a second 401 is returned to the caller.
  With ``interactive=False`` that login is ``NeedsInteraction`` instead, raised out of the
  request;
- a refresh token the server refused, or an access token it refused, is marked dead in the
  store (the refresh token dropped, the expiry set in the past; the registration and
  metadata kept) under the lock, so no other process replays it and the runner's login
  does not answer with it;
- the SDK's own in-process flow never runs: ``async_auth_flow`` is this class's own (the
  SDK's ``_auth_flow`` is never called), no redirect handler exists, nothing here binds a
  port. The provider is an async ``Auth`` only: a synchronous client's request raises;
- the event loop never waits on a file or a lock: store reads and writes and the lock run
  in daemon threads (``runner.offloop``); requests through one provider wait for each
  other only while one of them renews the tokens (the SDK context's lock);
- no token is logged, and no ``repr`` shows one.

Not guaranteed: 403 ``insufficient_scope`` step-up (passed to the caller as it is); a
synchronous (``httpx2.Client``) host.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.auth_utils import calculate_token_expiry
from pydantic import AnyUrl

from runner.errors import InvalidServerSpec, NeedsInteraction, RefreshRefused
from runner.loopback import netloc_host
from runner.offloop import Browser, holding, in_daemon_thread
from runner.refresh import (
    DEFAULT_MARGIN,
    LoginStatus,
    SharedTlsContext,
    login_status,
    refresh_login,
)
from runner.sdk import http
from runner.spec import ServerSpec
from runner.store import TokenStore, TokenStoreError, TokenStoreWarning
from runner.stored import StoredLogin

if TYPE_CHECKING:
    from portlease import Registry

__all__ = ["RunnerProvider", "StoreTokenStorage", "provider", "server_spec"]

logger = logging.getLogger("runner")

_T = TypeVar("_T")

#: A time long past: the expiry written for an access token the server refused. Not 0: the
#: SDK reads a false expiry as "never expires".
_DEAD: Final = 1.0


def server_spec(spec: ServerSpec | tuple[str, Mapping[str, Any]] | Mapping[str, Any]) -> ServerSpec:
    """A ``ServerSpec`` from what ``runner.provider`` accepts: a ``ServerSpec``, a
    ``(name, entry)`` pair or a one-server mapping ``{name: entry}`` (hermes-style entries).

    Raises:
        InvalidServerSpec: anything else, or an invalid entry.
    """
    if isinstance(spec, ServerSpec):
        return spec
    if isinstance(spec, Mapping):
        if len(spec) != 1:
            raise InvalidServerSpec(f"a provider is for one server; the mapping names {len(spec)}")
        ((name, entry),) = spec.items()
        return ServerSpec.from_mapping(str(name), entry)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return ServerSpec.from_mapping(spec[0], spec[1])
    raise InvalidServerSpec(
        f"expected a ServerSpec, a (name, entry) pair or {{name: entry}}, not {type(spec).__name__}"
    )


def provider(
    spec: ServerSpec | tuple[str, Mapping[str, Any]] | Mapping[str, Any],
    *,
    store: TokenStore | None = None,
    registry: Registry | None = None,
    interactive: bool = True,
    browser: Browser | None = None,
    timeout: float = 300.0,
    margin: float = DEFAULT_MARGIN,
) -> RunnerProvider:
    """The SDK's ``OAuthClientProvider`` for one server, kept by the runner and its store.

    Pass it as ``auth=`` to the SDK's HTTP client::

        auth = runner.provider(("linear", {"url": "https://mcp.linear.app/mcp"}))
        async with (
            httpx2.AsyncClient(auth=auth) as http,
            streamable_http_client(url, http_client=http) as (read, write, *_),
            ClientSession(read, write) as session,
        ): ...

    Args:
        spec: A ``ServerSpec``, a ``(name, entry)`` pair or ``{name: entry}``
            (hermes-style, as ``authorize_many`` takes them).
        store: Where the login is kept (default: the per-user store).
        registry: Port leases for a login through the runner (default: ``Registry()``).
        interactive: False: a login that needs a person raises ``NeedsInteraction`` out of
            the request instead of opening a browser.
        browser: As ``authorize_many``'s (None: print the URL, open the system browser).
        timeout: Seconds a login through the runner may take; also the longest wait for
            another process's refresh or login of this server (``TokenStoreError`` then).
        margin: Seconds before expiry that a token is renewed (at most a quarter of its
            lifetime).

    Nothing is read or started here: the store is read on the first request.

    Raises:
        InvalidServerSpec: ``spec``, ``timeout`` or ``margin`` is not valid.
    """
    checked = server_spec(spec)
    if not (isinstance(timeout, int | float) and 0 < timeout < float("inf")):
        raise InvalidServerSpec(f"timeout must be a positive number of seconds, not {timeout!r}")
    if not (isinstance(margin, int | float) and 0 <= margin < float("inf")):
        raise InvalidServerSpec(f"margin must be a number of seconds >= 0, not {margin!r}")
    return RunnerProvider(
        checked,
        store=store if store is not None else TokenStore(),
        registry=registry,
        interactive=interactive,
        browser=browser,
        timeout=float(timeout),
        margin=float(margin),
    )


def _client_metadata(spec: ServerSpec) -> OAuthClientMetadata:
    """What the SDK's context wants; never sent (a login's child registers itself)."""
    return OAuthClientMetadata(
        redirect_uris=[AnyUrl(f"http://{netloc_host(spec.redirect_host)}{spec.callback_path}")],
        client_name=spec.client_name,
        scope=spec.scope,
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="client_secret_post" if spec.client_secret else "none",
    )


class RunnerProvider(OAuthClientProvider):
    """``OAuthClientProvider`` whose flow is the runner's (see the module docstring).

    Build it with ``runner.provider(...)``. ``context`` is the SDK's, kept current
    (``current_tokens``, ``token_expiry_time``, ``client_info``, ``oauth_metadata``).
    """

    def __init__(
        self,
        spec: ServerSpec,
        *,
        store: TokenStore,
        registry: Registry | None,
        interactive: bool,
        browser: Browser | None,
        timeout: float,
        margin: float,
    ) -> None:
        super().__init__(
            server_url=spec.url,
            client_metadata=_client_metadata(spec),
            storage=StoreTokenStorage(store, spec.name, server_url=spec.url),
        )
        self.spec = spec
        self.store = store
        self._registry = registry
        self._interactive = interactive
        self._browser = browser
        self._timeout = timeout
        self._tls = SharedTlsContext()  # one for every refresh of this provider
        self._margin = margin
        self._login: StoredLogin | None = None
        self._restored = False

    def __repr__(self) -> str:
        return f"RunnerProvider({self.spec.name!r}, store={self.store!r})"

    # -- httpx2.Auth (httpx.Auth on mcp 1.x) ---------------------------------------------------

    async def async_auth_flow(
        self, request: http.Request
    ) -> AsyncGenerator[http.Request, http.Response]:
        """Send ``request`` with a valid access token; on a 401, renew once and resend."""
        await request.aread()  # it may be sent twice
        sent = await self._access_token(rejected=None)
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if response.status_code != 401:
            return
        logger.info("%s: the server refused its access token; renewing", self.spec.name)
        renewed = await self._access_token(rejected=sent)
        request.headers["Authorization"] = f"Bearer {renewed}"
        yield request

    def sync_auth_flow(self, request: http.Request) -> Generator[http.Request, http.Response]:
        """Refused: renewing takes a lock, a refresh and maybe a login; use an async client."""
        raise TypeError(
            f"{self.spec.name}: runner.provider works with an async client "
            "(httpx2.AsyncClient), not a synchronous one"
        )
        yield request  # pragma: no cover - makes this a generator, as httpx2 expects

    # -- tokens -------------------------------------------------------------------------------

    async def reload(self) -> StoredLogin | None:
        """Put back what the store holds for this server now (off the event loop); returns
        it. Requests do this themselves; a host may call it to look before the first one."""
        async with self.context.lock:
            return await self._restore()

    async def _restore(self) -> StoredLogin | None:
        stored = await self._load()
        if stored is not None:
            self._adopt(stored)
        self._restored = True
        return stored

    async def _access_token(self, *, rejected: str | None) -> str:
        """A usable access token: the one held, or one renewed (``rejected``: the server
        refused that token just now)."""
        async with self.context.lock:
            if not self._restored:
                await self._restore()
            held = self._login
            if held is not None and held.tokens.access_token != rejected and self._valid(held):
                return held.tokens.access_token  # as restored, or renewed meanwhile
            renewed = await self._renew(rejected)
            if renewed is None:
                renewed = await self._login_through_runner()
            return renewed.tokens.access_token

    def _valid(self, login: StoredLogin, *, margin: float | None = None) -> bool:
        """Whether ``login``'s access token counts as valid now. ``margin`` defaults to
        this provider's, at most a quarter of the token's lifetime, and 0 when there is
        nothing to refresh with (renewing early is then no use: the token is used to the
        end)."""
        if margin is None:
            lifetime = login.tokens.expires_in
            margin = self._margin if not lifetime else min(self._margin, lifetime / 4)
            if not _refreshable(login):
                margin = 0.0
        return login_status(login, now=time.time(), margin=margin) is LoginStatus.VALID

    async def _renew(self, rejected: str | None) -> StoredLogin | None:
        """Under the server's login lock: the store's login if a sibling renewed it, else a
        refresh of it; None when only a login with a person will do (the dead tokens are
        marked so in the store first)."""
        name = self.spec.name
        async with holding(self.store, name, self._timeout):
            stored = await self._load()
            if stored is None or stored.server_url != self.spec.url:
                return None
            self._adopt(stored)
            dead_access = rejected is not None and stored.tokens.access_token == rejected
            if not dead_access and self._valid(stored):
                return stored  # valid, or a sibling rotated it meanwhile: adopt, never replay
            if _refreshable(stored):
                try:
                    renewed = await refresh_login(stored, timeout=self._timeout, tls=self._tls)
                except RefreshRefused as exc:
                    logger.info("%s: %s", name, exc)
                else:
                    await self._save(renewed)
                    self._adopt(renewed)
                    logger.info("%s: tokens refreshed", name)
                    return renewed
                if not dead_access and self._valid(stored, margin=0.0):
                    # Refused within the margin: no refreshing any more, but the access
                    # token works to its end.
                    spent = _retired(stored, expires_at=stored.expires_at)
                    await self._save(spent)
                    self._adopt(spent)
                    return spent
            logger.info("%s: its tokens cannot be renewed; a new login is needed", name)
            await self._save(_retired(stored, expires_at=_DEAD))
            return None

    async def _login_through_runner(self) -> StoredLogin:
        name = self.spec.name
        if not self._interactive:
            raise NeedsInteraction(
                f"{name}: its stored login cannot be used or refreshed and a new one needs a "
                "person in a browser (interactive=False)"
            )
        from runner.flows import authorize_many  # the supervisor, only when a login is due

        results = await authorize_many(
            [self.spec],
            store=self.store,
            registry=self._registry,
            interactive=True,
            browser=self._browser,
            timeout=self._timeout,
        )
        result = results[name]
        if not result.ok or result.tokens is None:
            raise result.error or NeedsInteraction(f"{name}: the login ended without tokens")
        stored = await self._load()
        if stored is not None and stored.tokens.access_token == result.tokens.access_token:
            login = stored
        else:  # not saved (a TokenStoreWarning said so): keep what is known
            previous = self._login
            login = StoredLogin(
                server_url=self.spec.url,
                tokens=result.tokens,
                expires_at=calculate_token_expiry(result.tokens.expires_in),
                client_info=previous.client_info if previous is not None else None,
                oauth_metadata=previous.oauth_metadata if previous is not None else None,
            )
        self._adopt(login)
        return login

    def _adopt(self, login: StoredLogin) -> None:
        """Make ``login`` the provider's, in the SDK's context too (issue #3250)."""
        self._login = login
        context = self.context
        context.current_tokens = login.tokens
        context.token_expiry_time = login.expires_at
        context.client_info = login.client_info
        if login.oauth_metadata is not None:
            context.oauth_metadata = login.oauth_metadata
        self._initialized = True  # the SDK's flag: its storage has been read

    async def _load(self) -> StoredLogin | None:
        name = self.spec.name
        return await in_daemon_thread(
            f"runner-store-{name}", functools.partial(self.store.load, name)
        )

    async def _save(self, login: StoredLogin) -> None:
        """Save, or warn: the tokens in hand still work, but the next process logs in again."""
        name = self.spec.name
        try:
            await in_daemon_thread(
                f"runner-store-{name}", functools.partial(self.store.save, name, login)
            )
        except TokenStoreError as exc:
            message = f"{name}: its renewed login was not saved ({exc})"
            logger.warning("%s", message)
            warnings.warn(message, TokenStoreWarning, stacklevel=2)


def _refreshable(login: StoredLogin) -> bool:
    """Whether ``login`` holds what a refresh needs (``runner.refresh.refresh_request``)."""
    client = login.client_info
    metadata = login.oauth_metadata
    return bool(
        login.tokens.refresh_token
        and client is not None
        and client.client_id
        and metadata is not None
        and metadata.token_endpoint is not None
    )


def _retired(login: StoredLogin, *, expires_at: float | None) -> StoredLogin:
    """``login`` without its refresh token (refused, or there was none) and with
    ``expires_at`` (``_DEAD``: its access token is of no more use either); the client
    registration and the server's metadata are kept for the next login."""
    return StoredLogin(
        server_url=login.server_url,
        tokens=login.tokens.model_copy(update={"refresh_token": None}),
        expires_at=expires_at,
        client_info=login.client_info,
        oauth_metadata=login.oauth_metadata,
    )


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

    def __init__(self, store: TokenStore, name: str, *, server_url: str | None = None) -> None:
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
