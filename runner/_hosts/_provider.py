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
  the provider is used, and again whenever it renews;
- one renewal policy (``runner._core._renewal``): a held token is sent while the policy calls it
  valid (``margin`` seconds before expiry at most a quarter of its lifetime, 0 when nothing
  could refresh it); otherwise the login is renewed exactly as ``authorize_many`` renews
  it (``runner._parent._runner.renew_login``): under the server's lock across processes, the store
  read again (a sibling's rotated refresh token is adopted, never replayed), refreshed in
  this process, or a login through the runner (a child on a leased port) when only a person
  can renew it; N processes with one expired token make one refresh grant;
- with nothing stored, a request goes out without a token: a server that lets it through
  needs no login yet (``authorize_many`` reports such a server ``deferred``);
- a challenge on any request is answered: a 401 renews (the refused access token counted
  dead), and a 403 ``insufficient_scope`` logs in for the union of the scopes held and the
  scopes challenged (step-up), carrying the challenge (its ``resource_metadata``) to the
  login; the request is then sent again. At most ``MAX_RENEWALS_PER_REQUEST`` renewals per
  request, and a challenge that renewing has already answered (a second 401, or a 403 for
  scopes now held) is not answered again: ``AccessRefused`` is raised out of the request
  instead of a loop of logins;
- a refresh the server refused while the access token is still valid keeps both (the
  store is never written but with new tokens); the token is used to its end without asking
  again, and renewed after;
- with ``interactive=False`` a login that needs a person raises ``NeedsInteraction`` out of
  the request; nothing is written;
- the SDK's own in-process flow never runs: ``async_auth_flow`` is this class's own (the
  SDK's ``_auth_flow`` is never called), no redirect handler exists, nothing here binds a
  port. The provider is an async ``Auth`` only: a synchronous client's request raises;
- the event loop never waits on a file or a lock (store reads in daemon threads,
  ``runner._parent._offloop``); requests through one provider wait for each other only while one of
  them renews the tokens (the SDK context's lock);
- no token is logged, and no ``repr`` shows one.

Not guaranteed: a synchronous (``httpx2.Client``) host.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientMetadata, OAuthToken
from mcp.shared.auth_utils import calculate_token_expiry
from pydantic import AnyUrl

from runner._core._challenge import Challenge, parse_challenge
from runner._core._entries import read_entry
from runner._core._loopback import netloc_host
from runner._core._renewal import DEFAULT_MARGIN, LoginRequest, Situation, UseStored, decide
from runner._core._spec import ServerSpec
from runner._core._stored import StoredLogin
from runner._io._http import http
from runner._io._threads import in_daemon_thread
from runner._parent._offloop import Browser
from runner._stores._sdk_storage import StoreTokenStorage
from runner._stores._token_store import TokenStore
from runner.errors import AccessRefused, InvalidServerSpec, NeedsInteraction

if TYPE_CHECKING:
    from portlease import Registry

__all__ = [
    "MAX_RENEWALS_PER_REQUEST",
    "RunnerProvider",
    "provider",
    "server_spec",
]

logger = logging.getLogger("runner")

_T = TypeVar("_T")

#: The most renewals (a refresh or a login) one request may cause, whatever the server
#: answers: a 401 and then a step-up, say. A server that keeps refusing gets
#: ``AccessRefused``, not an endless series of logins.
MAX_RENEWALS_PER_REQUEST: Final = 2


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
        return _read(str(name), entry)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return _read(spec[0], spec[1])
    raise InvalidServerSpec(
        f"expected a ServerSpec, a (name, entry) pair or {{name: entry}}, not {type(spec).__name__}"
    )


def _read(name: str, entry: object) -> ServerSpec:
    read = read_entry(name, entry, hermes_config=False)
    assert read.spec is not None  # the library's rules skip nothing
    return read.spec


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
            another process's refresh or login of this server.
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
        self._margin = margin
        self._login: StoredLogin | None = None
        self._restored = False
        # The access token a renewal gave back unchanged (its refresh was refused while it
        # was still valid): used to its end, not renewed early again.
        self._kept_to_expiry: str | None = None

    def __repr__(self) -> str:
        return f"RunnerProvider({self.spec.name!r}, store={self.store!r})"

    # -- httpx2.Auth (httpx.Auth on mcp 1.x) ---------------------------------------------------

    async def async_auth_flow(
        self, request: http.Request
    ) -> AsyncGenerator[http.Request, http.Response]:
        """Send ``request`` with a valid access token (none when nothing is stored); answer
        the server's challenges (401, 403 ``insufficient_scope``) by renewing, boundedly."""
        await request.aread()  # it may be sent again
        sent = await self._access_token(None)
        _authorize(request, sent)
        response = yield request
        answered: list[Challenge] = []
        while True:
            challenge = parse_challenge(
                response.status_code, response.headers.get("www-authenticate")
            )
            if challenge is None:
                return
            if len(answered) >= MAX_RENEWALS_PER_REQUEST or self._answered(challenge, answered):
                raise AccessRefused(
                    f"{self.spec.name}: the server refused the request again after its token "
                    f"was renewed (HTTP {challenge.status}"
                    f"{f' {challenge.error}' if challenge.error else ''}"
                    f"{f', scope {challenge.scope!r}' if challenge.scope else ''})"
                )
            answered.append(challenge)
            logger.info(
                "%s: the server asked for a login (HTTP %s)", self.spec.name, challenge.status
            )
            rejected = sent if challenge.status == 401 else None
            sent = await self._access_token(
                LoginRequest(challenge=challenge, rejected=rejected, margin=self._margin)
            )
            _authorize(request, sent)
            response = yield request

    def sync_auth_flow(self, request: http.Request) -> Generator[http.Request, http.Response]:
        """Refused: renewing takes a lock, a refresh and maybe a login; use an async client."""
        raise TypeError(
            f"{self.spec.name}: runner.provider works with an async client "
            "(httpx2.AsyncClient), not a synchronous one"
        )
        yield request  # pragma: no cover - makes this a generator, as httpx2 expects

    def _answered(self, challenge: Challenge, answered: list[Challenge]) -> bool:
        """Whether renewing has already answered ``challenge`` in this request: a second 401
        (the renewed token was refused too), or a step-up for scopes now held."""
        if challenge.status == 401:
            return any(c.status == 401 for c in answered)
        held = set((self._login.tokens.scope or "").split()) if self._login else set()
        wanted = set((challenge.scope or "").split())
        return any(c.step_up for c in answered) and wanted <= held

    # -- tokens -------------------------------------------------------------------------------

    async def reload(self) -> StoredLogin | None:
        """Put back what the store holds for this server now (off the event loop); returns
        it. Requests do this themselves; a host may call it to look before the first one."""
        async with self.context.lock:
            return await self._restore()

    async def _restore(self) -> StoredLogin | None:
        stored = await self._load()
        if stored is not None and stored.server_url == self.spec.url:
            self._adopt(stored)
        self._restored = True
        return stored

    async def _access_token(self, request: LoginRequest | None) -> str | None:
        """The access token to send: the one held while the policy calls it valid, else a
        renewed one (``request``: the server's challenge just now). None: nothing is stored
        and nothing was asked, or the server asked for no login."""
        async with self.context.lock:
            if not self._restored:
                await self._restore()
            held = self._login
            if request is None:
                if held is None:
                    return None  # the server says whether it wants a login
                if self._usable(held):
                    return held.tokens.access_token
                request = LoginRequest(margin=self._margin)
            elif (
                held is not None
                and request.rejected not in (None, held.tokens.access_token)
                and self._usable(held)
            ):
                return held.tokens.access_token  # renewed meanwhile by another request
            return await self._renew(request, held)

    def _usable(self, login: StoredLogin, now: float | None = None) -> bool:
        """Whether the renewal policy uses ``login`` as it is ``now`` (default: the clock)."""
        kept = (
            self._kept_to_expiry is not None and login.tokens.access_token == self._kept_to_expiry
        )
        situation = Situation(
            name=self.spec.name,
            stored=login,
            server_url=self.spec.url,
            client_id=self.spec.client_id,
            scope=self.spec.scope,
            now=time.time() if now is None else now,
            interactive=self._interactive,
            margin=0.0 if kept else self._margin,
        )
        return isinstance(decide(situation), UseStored)

    async def _renew(self, request: LoginRequest, held: StoredLogin | None) -> str | None:
        from runner._parent._runner import renew_login  # the supervisor, only when a renewal is due

        result = await renew_login(
            self.spec,
            request,
            store=self.store,
            registry=self._registry,
            timeout=self._timeout,
            browser=self._browser,
            interactive=self._interactive,
        )
        if not result.ok:
            raise result.error or NeedsInteraction(
                f"{self.spec.name}: the login ended without tokens"
            )
        if result.tokens is None:  # the server asked for no login after all
            return None
        login = await self._adopt_result(result.tokens)
        token = login.tokens.access_token
        unchanged = held is not None and held.tokens.access_token == token
        self._kept_to_expiry = token if unchanged else None
        return token

    async def _adopt_result(self, tokens: OAuthToken) -> StoredLogin:
        """Adopt what the store now holds for these tokens (expiry, registration, metadata),
        or the tokens alone when they were not saved (a ``TokenStoreWarning`` said so)."""
        stored = await self._load()
        if stored is not None and stored.tokens.access_token == tokens.access_token:
            login = stored
        else:
            previous = self._login
            login = StoredLogin(
                server_url=self.spec.url,
                tokens=tokens,
                expires_at=calculate_token_expiry(tokens.expires_in),
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


def _authorize(request: http.Request, token: str | None) -> None:
    if token is None:
        request.headers.pop("Authorization", None)
    else:
        request.headers["Authorization"] = f"Bearer {token}"
