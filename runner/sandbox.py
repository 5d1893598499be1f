"""Local OAuth authorization servers with protected MCP servers, on loopback, for tests and demos.

What it is:
    ``Sandbox(servers=N)`` starts N independent MCP servers (the SDK's ``MCPServer``,
    streamable HTTP at ``/mcp``, one tool ``whoami``). Each one embeds its own in-memory
    OAuth 2.1 authorization server at the same origin: dynamic client registration, PKCE
    (verified by the SDK's token handler), refresh tokens with rotation, access tokens with
    a TTL bound to the server's resource URL (RFC 8707), RFC 9207 ``iss`` in the
    authorization response, advertised in its metadata. Consent is automatic: ``/authorize``
    redirects straight back to the client's ``redirect_uri``, so any browser (a real headless
    one, or :meth:`Sandbox.browser`) completes a login by following redirects. Knobs
    (:class:`Behaviour`) make an authorization server deny consent, drop or falsify ``iss``,
    answer slowly, or hang at the token endpoint::

        with Sandbox(servers=3, overrides={"sandbox-2": {"consent": "deny"}}) as sb:
            sb.config()     # {"sandbox-1": {"url": "http://127.0.0.1:P/mcp"}, ...}
            authorize_many(sb.config(), browser=sb.browser, ...)
            sb.issued_tokens("sandbox-1")   # the access tokens that server issued

Invariants:
    - Every server listens on a socket the sandbox binds itself (127.0.0.1, port 0, listening
      before any URL names it) and hands to uvicorn: no port race, no fixed port. The sockets
      are not inheritable, so child processes never hold them.
    - One host spelling, ``127.0.0.1``, in every URL; issuer and resource URLs are built
      through ``AuthSettings`` and read back from it, so metadata, the protected resource
      metadata and the ``iss`` parameter agree to the character (no trailing slash).
    - Servers share nothing: each has its own provider instance, so a token of one server is
      unknown to every other; tokens are also bound to their server's resource URL and the
      SDK checks it (``validate_token_resource=True``).
    - All servers run on one event loop in one background daemon thread. The caller's thread
      and loop are never used: a sandbox works from synchronous code and from inside a
      running event loop. uvicorn installs signal handlers only on the main thread, so the
      host keeps its SIGINT handler.
    - :meth:`Sandbox.stop` (``__exit__``) releases requests the knobs hold back (a hung token
      endpoint, a delayed authorization), closes every socket and joins the thread within a
      bound; a sandbox starts once and is never reused.
    - No network besides loopback: :meth:`Sandbox.browser` refuses any other host. Tokens and
      codes are never logged; error messages drop query strings.

What it is not:
    Not a production authorization server and not a model of one: no users, no login page,
    no persistence, no TLS, no client secrets worth the name, opaque random tokens held in
    memory until the sandbox stops. It must not import the rest of ``runner``: it is the
    fixture that ``runner`` is tested against.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import ipaddress
import logging
import secrets
import socket
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self
from urllib.parse import urljoin, urlsplit

import httpx
import httpx2
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from mcp.types import TextContent
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.routing import Route

__all__ = [
    "HOST",
    "MCP_PATH",
    "SCOPE",
    "Behaviour",
    "BrowserError",
    "CallbackUnreachable",
    "Sandbox",
    "SandboxError",
    "SandboxServer",
    "TokenRejected",
    "list_tools_with_token",
    "whoami_with_token",
]

HOST: Final = "127.0.0.1"
"""The one host spelling of every sandbox URL."""
MCP_PATH: Final = "/mcp"
"""Path of the MCP endpoint (the protected resource) on every server."""
SCOPE: Final = "mcp"
"""The one scope: valid, default and required."""

_AS_METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
_CODE_TTL: Final = 300.0
_SUBJECT: Final = "sandbox-user"
_BACKLOG: Final = 128
_MAX_HOPS: Final = 10
_GRACEFUL_SHUTDOWN: Final = 1  # seconds uvicorn gives open connections at stop
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_LOOPBACK_NAMES: Final = frozenset({"localhost"})

# ---------------------------------------------------------------------------------------------
# Errors
#
#   SandboxError
#    ├── BrowserError
#    │    └── CallbackUnreachable
#    └── TokenRejected
# ---------------------------------------------------------------------------------------------


class SandboxError(Exception):
    """Raised when the sandbox cannot start or stop, or is used outside its life."""


class BrowserError(SandboxError):
    """Raised by :meth:`Sandbox.browser` when it cannot carry a login to its callback.

    The authorization server answered without a redirect, a URL left loopback, there were too
    many redirects, or a request failed or timed out.
    """


class CallbackUnreachable(BrowserError):
    """Raised by :meth:`Sandbox.browser` when nothing accepts a connection at the callback."""


class TokenRejected(SandboxError):
    """Raised when an MCP server answers 401 or 403 to a bearer token.

    Attributes:
        url: The MCP endpoint.
        status: The HTTP status (401: unknown, expired or foreign token; 403: scope).
    """

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url} rejected the access token (HTTP {status})")
        self.url = url
        self.status = status


# ---------------------------------------------------------------------------------------------
# Public values
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How one sandbox authorization server behaves (the defaults are a well-behaved one).

    Attributes:
        consent: ``"approve"`` redirects with a code; ``"deny"`` redirects with
            ``error=access_denied``.
        send_iss: Put the RFC 9207 ``iss`` parameter in authorization responses.
        advertise_iss: Advertise ``authorization_response_iss_parameter_supported`` in the
            authorization server metadata.
        wrong_iss: Send an ``iss`` that differs from the issuer (when ``send_iss``).
        authorize_delay: Seconds ``/authorize`` waits before it redirects.
        hang: The token endpoint never answers an authorization-code exchange until the
            sandbox stops (then it answers ``invalid_grant``).
        access_token_ttl: Lifetime of access tokens, in seconds.
    """

    consent: Literal["approve", "deny"] = "approve"
    send_iss: bool = True
    advertise_iss: bool = True
    wrong_iss: bool = False
    authorize_delay: float = 0.0
    hang: bool = False
    access_token_ttl: int = 3600

    def __post_init__(self) -> None:
        if self.consent not in ("approve", "deny"):
            raise ValueError(f"consent must be 'approve' or 'deny', not {self.consent!r}")
        if not self.authorize_delay >= 0:
            raise ValueError(f"authorize_delay must be >= 0, not {self.authorize_delay!r}")
        if self.access_token_ttl < 1:
            raise ValueError(f"access_token_ttl must be >= 1 second, not {self.access_token_ttl!r}")


@dataclass(frozen=True, slots=True)
class SandboxServer:
    """One running sandbox server.

    Attributes:
        name: ``sandbox-1``, ``sandbox-2``, ...
        url: The MCP endpoint and protected resource, ``http://127.0.0.1:PORT/mcp``.
        issuer: The authorization server's issuer, ``http://127.0.0.1:PORT`` (no slash).
        port: The listening port.
        behaviour: How its authorization server behaves.
    """

    name: str
    url: str
    issuer: str
    port: int
    behaviour: Behaviour


# ---------------------------------------------------------------------------------------------
# The authorization server
# ---------------------------------------------------------------------------------------------


class _AccessToken(AccessToken):
    refresh_token: str | None = None


class _RefreshToken(RefreshToken):
    access_token: str | None = None


def _same_resource(a: str, b: str) -> bool:
    """Compare resource URLs as the SDK's bearer check does: normalized, trailing slash aside."""
    try:
        return str(AnyHttpUrl(a)).removesuffix("/") == str(AnyHttpUrl(b)).removesuffix("/")
    except ValueError:
        return False


class _Provider(OAuthAuthorizationServerProvider[AuthorizationCode, _RefreshToken, _AccessToken]):
    """In-memory authorization server of one sandbox server.

    Runs on the sandbox loop only; nothing awaits between a check and its update, so
    single-use codes and refresh rotation hold under concurrent requests. The set of issued
    access tokens is also read from other threads, under ``_issued_lock``.
    """

    def __init__(
        self, *, issuer: str, resource: str, behaviour: Behaviour, stopping: asyncio.Event
    ) -> None:
        self._issuer = issuer
        self._resource = resource
        self._behaviour = behaviour
        self._stopping = stopping
        self._clients: dict[str, OAuthClientInformationFull] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._issued_lock = threading.Lock()
        self._issued: set[str] = set()

    def issued(self) -> set[str]:
        with self._issued_lock:
            return set(self._issued)

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self._clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        if client_info.client_id is None:  # the SDK's handler always sets one
            raise ValueError("client_id missing")
        self._clients[client_info.client_id] = client_info

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        behaviour = self._behaviour
        if behaviour.authorize_delay > 0 and await self._stopped_within(behaviour.authorize_delay):
            raise AuthorizeError("temporarily_unavailable", "the sandbox is stopping")
        if params.resource is not None and not _same_resource(params.resource, self._resource):
            raise AuthorizeError(
                "invalid_target", f"this server issues tokens for {self._resource}"
            )
        redirect_uri = str(params.redirect_uri)
        iss = self._iss_parameter()
        if behaviour.consent == "deny":
            return construct_redirect_uri(
                redirect_uri,
                error="access_denied",
                error_description="the sandbox user denied access",
                state=params.state,
                iss=iss,
            )
        code = secrets.token_urlsafe(32)
        self._codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or self._registered_scopes(client),
            expires_at=time.time() + _CODE_TTL,
            client_id=client.client_id or "",
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource or self._resource,
            subject=_SUBJECT,
        )
        return construct_redirect_uri(redirect_uri, code=code, state=params.state, iss=iss)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        code = self._codes.get(authorization_code)
        if code is None or code.client_id != client.client_id:
            return None
        return code

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        if self._behaviour.hang:
            await self._stopping.wait()
            raise TokenError("invalid_grant", "the sandbox is stopping")
        if self._codes.pop(authorization_code.code, None) is None:
            raise TokenError("invalid_grant", "authorization code was already used")
        return self._issue(
            authorization_code.client_id,
            authorization_code.scopes,
            authorization_code.resource,
            authorization_code.subject,
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> _RefreshToken | None:
        token = self._refresh.get(refresh_token)
        if token is None or token.client_id != client.client_id:
            return None
        return token

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: _RefreshToken,
        scopes: list[str],
    ) -> OAuthToken:
        # Rotation: a refresh token works once. The access token it came with stays valid
        # until it expires.
        if self._refresh.pop(refresh_token.token, None) is None:
            raise TokenError("invalid_grant", "refresh token was already used")
        return self._issue(
            refresh_token.client_id, scopes, refresh_token.resource, refresh_token.subject
        )

    async def load_access_token(self, token: str) -> _AccessToken | None:
        access = self._access.get(token)
        if access is None:
            return None
        if access.expires_at is not None and access.expires_at < time.time():
            del self._access[token]
            return None
        return access

    async def revoke_token(self, token: _AccessToken | _RefreshToken) -> None:
        if isinstance(token, _AccessToken):
            self._access.pop(token.token, None)
            if token.refresh_token is not None:
                self._refresh.pop(token.refresh_token, None)
        else:
            self._refresh.pop(token.token, None)
            if token.access_token is not None:
                self._access.pop(token.access_token, None)

    def _issue(
        self, client_id: str, scopes: list[str], resource: str | None, subject: str | None
    ) -> OAuthToken:
        ttl = self._behaviour.access_token_ttl
        access = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        resource = resource or self._resource
        self._access[access] = _AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(time.time()) + ttl,
            resource=resource,
            subject=subject,
            claims={"iss": self._issuer},
            refresh_token=refresh,
        )
        self._refresh[refresh] = _RefreshToken(
            token=refresh,
            client_id=client_id,
            scopes=scopes,
            resource=resource,
            subject=subject,
            access_token=access,
        )
        with self._issued_lock:
            self._issued.add(access)
        return OAuthToken(
            access_token=access,
            expires_in=ttl,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    def _iss_parameter(self) -> str | None:
        if not self._behaviour.send_iss:
            return None
        if self._behaviour.wrong_iss:
            return f"{self._issuer}/not-this-issuer"
        return self._issuer

    @staticmethod
    def _registered_scopes(client: OAuthClientInformationFull) -> list[str]:
        return client.scope.split() if client.scope else [SCOPE]

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds`` or until the sandbox stops; True if it stopped."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


# ---------------------------------------------------------------------------------------------
# One server: settings, app, uvicorn
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """A server before and while it runs: its socket, settings and (once built) provider."""

    name: str
    sock: socket.socket
    port: int
    settings: AuthSettings
    behaviour: Behaviour
    provider: _Provider | None = None

    @property
    def public(self) -> SandboxServer:
        assert self.settings.resource_server_url is not None
        return SandboxServer(
            name=self.name,
            url=str(self.settings.resource_server_url),
            issuer=str(self.settings.issuer_url),
            port=self.port,
            behaviour=self.behaviour,
        )


def _auth_settings(port: int) -> AuthSettings:
    origin = f"http://{HOST}:{port}"
    return AuthSettings.model_validate(
        {
            "issuer_url": origin,
            "resource_server_url": origin + MCP_PATH,
            "client_registration_options": ClientRegistrationOptions(
                enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]
            ),
            "revocation_options": RevocationOptions(enabled=True),
            "required_scopes": [SCOPE],
            "validate_token_resource": True,
        }
    )


def _bind_loopback() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a free port and listening (not inheritable)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if sys.platform == "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        sock.bind((HOST, 0))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """Keep ``MCPServer()`` from configuring the host's root logger.

    ``MCPServer.__init__`` calls ``logging.basicConfig``, which installs a handler on the root
    logger when it has none. With a handler present, basicConfig does nothing.
    """
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)


def _metadata(settings: AuthSettings, behaviour: Behaviour) -> OAuthMetadata:
    """The SDK's metadata, plus what this authorization server really supports."""
    registration = settings.client_registration_options or ClientRegistrationOptions()
    revocation = settings.revocation_options or RevocationOptions()
    metadata = build_metadata(settings.issuer_url, None, registration, revocation)
    # The SDK omits both: its token endpoint accepts public clients ("none"), and this server
    # sends iss (RFC 9207) unless told otherwise.
    metadata.token_endpoint_auth_methods_supported = [
        "none",
        "client_secret_post",
        "client_secret_basic",
    ]
    if behaviour.advertise_iss:
        metadata.authorization_response_iss_parameter_supported = True
    return metadata


def _replace_metadata_route(app: Starlette, metadata: OAuthMetadata) -> None:
    routes = app.router.routes
    for index, route in enumerate(routes):
        if isinstance(route, Route) and route.path == _AS_METADATA_PATH:
            routes[index] = Route(
                _AS_METADATA_PATH,
                endpoint=cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"]),
                methods=["GET", "OPTIONS"],
            )
            return
    raise SandboxError(f"the MCP SDK app has no {_AS_METADATA_PATH} route to replace")


def _build_app(
    name: str, settings: AuthSettings, provider: _Provider, behaviour: Behaviour
) -> tuple[Starlette, StreamableHTTPSessionManager]:
    """The ASGI app of one server, and its MCP session manager (which the caller must run)."""
    with _root_logging_untouched():
        server: MCPServer[object] = MCPServer(
            name=name, auth_server_provider=provider, auth=settings, log_level="WARNING"
        )

    def whoami() -> str:
        """The name of the sandbox server that answers."""
        return name

    server.tool(name="whoami")(whoami)
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=HOST)
    _replace_metadata_route(app, _metadata(settings, behaviour))
    return app, server.session_manager


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, reporting readiness and stopping on ``exit_now`` instead of polling."""

    def __init__(self, config: uvicorn.Config, *, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.exit_now = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default headers once
        await self.exit_now.wait()


# ---------------------------------------------------------------------------------------------
# The sandbox
# ---------------------------------------------------------------------------------------------


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Sandbox:
    """N sandbox servers on one background event loop (see the module docstring).

    Args:
        servers: How many servers (``sandbox-1`` ... ``sandbox-N``).
        consent, send_iss, advertise_iss, wrong_iss, authorize_delay, hang, access_token_ttl:
            The :class:`Behaviour` of every server.
        overrides: Per server name, a :class:`Behaviour` that replaces the sandbox-wide one,
            or a mapping of fields that changes it (``{"sandbox-2": {"consent": "deny"}}``).
        browser_timeout: Per-request timeout of :meth:`browser`, in seconds.
        startup_timeout: How long :meth:`start` waits for every server to accept connections.
        stop_timeout: How long :meth:`stop` waits for the background thread.

    Raises:
        ValueError: A knob is out of range, or ``overrides`` names no server or an unknown field.
    """

    def __init__(
        self,
        servers: int = 1,
        *,
        consent: Literal["approve", "deny"] = "approve",
        send_iss: bool = True,
        advertise_iss: bool = True,
        wrong_iss: bool = False,
        authorize_delay: float = 0.0,
        hang: bool = False,
        access_token_ttl: int = 3600,
        overrides: Mapping[str, Behaviour | Mapping[str, object]] | None = None,
        browser_timeout: float = 10.0,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if servers < 1:
            raise ValueError(f"servers must be >= 1, not {servers!r}")
        self._names = [f"sandbox-{index}" for index in range(1, servers + 1)]
        base = Behaviour(
            consent=consent,
            send_iss=send_iss,
            advertise_iss=advertise_iss,
            wrong_iss=wrong_iss,
            authorize_delay=authorize_delay,
            hang=hang,
            access_token_ttl=access_token_ttl,
        )
        self._behaviours = {name: base for name in self._names}
        for name, override in (overrides or {}).items():
            if name not in self._behaviours:
                raise ValueError(f"overrides names {name!r}, which is not one of {self._names}")
            if isinstance(override, Behaviour):
                self._behaviours[name] = override
            else:
                try:
                    self._behaviours[name] = dataclasses.replace(base, **override)  # type: ignore[arg-type]
                except TypeError as exc:
                    raise ValueError(f"overrides[{name!r}]: {exc}") from exc
        self._browser_timeout = browser_timeout
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout

        self._lock = threading.Lock()
        self._state = _State.NEW
        self._slots: list[_Slot] = []
        self._by_name: dict[str, _Slot] = {}
        self._ports: frozenset[int] = frozenset()
        self._browser_calls = 0
        self._ssl: ssl.SSLContext | None = None
        # Between the caller's thread and the loop thread:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop_requested = threading.Event()
        self._error: BaseException | None = None
        self._started_count = 0
        # Loop thread only:
        self._stopping: asyncio.Event | None = None
        self._serving: list[tuple[_Uvicorn, StreamableHTTPSessionManager, socket.socket]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bind every socket, start the loop thread, return once every server accepts connections.

        Raises:
            SandboxError: Already started, or a server failed to start in time; everything
                started so far has been stopped again.
        """
        with self._lock:
            if self._state is not _State.NEW:
                raise SandboxError(f"this sandbox is {self._state.value}; a sandbox starts once")
            self._state = _State.RUNNING
        try:
            for name in self._names:
                sock = _bind_loopback()
                port = sock.getsockname()[1]
                slot = _Slot(name, sock, port, _auth_settings(port), self._behaviours[name])
                self._slots.append(slot)
                self._by_name[name] = slot
            self._ports = frozenset(slot.port for slot in self._slots)
            self._thread = threading.Thread(
                target=self._run, name=f"sandbox-loop-{id(self):x}", daemon=True
            )
            self._thread.start()
            if not self._ready.wait(self._startup_timeout):
                raise SandboxError(f"the sandbox did not start within {self._startup_timeout} s")
            if self._error is not None:
                raise SandboxError(
                    f"a sandbox server failed to start: {self._error!r}"
                ) from self._error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server, close every socket, join the thread. Idempotent.

        Requests held back by a knob are released and MCP sessions are ended first, so
        neither a hung token endpoint nor a client's open event stream delays the stop; any
        other request still running gets about a second.

        Raises:
            SandboxError: The thread did not end within ``stop_timeout`` (it is a daemon
                thread; the sockets are closed regardless).
        """
        with self._lock:
            if self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
        self._stop_requested.set()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(self._begin_stop)
        alive = False
        if self._thread is not None:
            self._thread.join(self._stop_timeout)
            alive = self._thread.is_alive()
        for slot in self._slots:
            slot.sock.close()
        if alive:
            raise SandboxError(f"the sandbox thread did not stop within {self._stop_timeout} s")

    # -- what the caller sees -------------------------------------------------------------------

    @property
    def servers(self) -> list[SandboxServer]:
        """The servers, in name order (empty before :meth:`start`)."""
        return [slot.public for slot in self._slots]

    def server(self, name: str) -> SandboxServer:
        """The server called ``name``.

        Raises:
            KeyError: No server has that name (or the sandbox has not started).
        """
        return self._slot(name).public

    def config(self) -> dict[str, dict[str, str]]:
        """Hermes-style server configuration: ``{name: {"url": ".../mcp"}}``."""
        return {slot.name: {"url": slot.public.url} for slot in self._slots}

    def issued_tokens(self, name: str) -> set[str]:
        """The access tokens the server called ``name`` has issued so far (a copy).

        Raises:
            KeyError: No server has that name (or the sandbox has not started).
        """
        provider = self._slot(name).provider
        return provider.issued() if provider is not None else set()

    @property
    def browser_calls(self) -> int:
        """How many times :meth:`browser` has been called."""
        with self._lock:
            return self._browser_calls

    def browser(self, url: str, spec: object = None) -> int:
        """An automated consent browser: carry the authorization URL ``url`` to its callback.

        GETs ``url`` without following redirects automatically, follows the sandbox's
        redirects by hand until a ``Location`` points at a loopback URL that is not a sandbox
        server (the client's callback listener), GETs that URL once and returns its HTTP status.
        Thread-safe: every call has its own HTTP client. ``spec`` (what the runner passes
        along) is ignored.

        Raises:
            CallbackUnreachable: Nothing accepts connections at the callback URL.
            BrowserError: The authorization server answered without a redirect, a URL is not on
                loopback, there were more than 10 redirects, or a request failed or timed out.
        """
        del spec
        with self._lock:
            self._browser_calls += 1
            # httpx builds an SSL context (about 50 ms of CPU) per client unless given one.
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        timeout = httpx.Timeout(self._browser_timeout)
        with httpx.Client(
            follow_redirects=False, timeout=timeout, trust_env=False, verify=context
        ) as client:
            target = url
            for _hop in range(_MAX_HOPS):
                if not self._on_sandbox(target):
                    break
                response = self._browser_get(client, target, "the authorization server")
                if response.status_code not in _REDIRECT_STATUSES:
                    raise BrowserError(
                        f"{_without_query(target)} answered HTTP {response.status_code} "
                        f"instead of a redirect: {response.text[:300]}"
                    )
                location = response.headers.get("location")
                if not location:
                    raise BrowserError(f"{_without_query(target)} redirected without a Location")
                target = urljoin(target, location)
            else:
                raise BrowserError(f"more than {_MAX_HOPS} redirects from {_without_query(url)}")
            try:
                response = client.get(target)
            except httpx.ConnectError as exc:
                raise CallbackUnreachable(
                    f"the callback listener at {_without_query(target)} is not reachable: {exc}"
                ) from exc
            except httpx.HTTPError as exc:
                raise BrowserError(
                    f"the callback request to {_without_query(target)} failed: {exc!r}"
                ) from exc
            return response.status_code

    def __repr__(self) -> str:
        return f"<Sandbox {self._state.value} servers={[s.public.url for s in self._slots]}>"

    # -- helpers --------------------------------------------------------------------------------

    def _slot(self, name: str) -> _Slot:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no sandbox server is called {name!r}") from None

    def _on_sandbox(self, url: str) -> bool:
        """Whether ``url`` is on a sandbox server; BrowserError if it is not on loopback."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not _is_loopback(parts.hostname):
            raise BrowserError(f"refusing to leave loopback: {_without_query(url)}")
        try:
            port = parts.port
        except ValueError as exc:
            raise BrowserError(f"bad port in {_without_query(url)}") from exc
        return parts.hostname == HOST and port in self._ports

    @staticmethod
    def _browser_get(client: httpx.Client, url: str, what: str) -> httpx.Response:
        try:
            return client.get(url)
        except httpx.HTTPError as exc:
            raise BrowserError(f"{what} at {_without_query(url)} failed: {exc!r}") from exc

    # -- the loop thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # nothing may escape the thread
            self._fail(exc)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        stopping = asyncio.Event()
        self._stopping = stopping
        self._loop = asyncio.get_running_loop()
        try:
            for slot in self._slots:
                slot.provider = _Provider(
                    issuer=str(slot.settings.issuer_url),
                    resource=str(slot.settings.resource_server_url),
                    behaviour=slot.behaviour,
                    stopping=stopping,
                )
                app, sessions = _build_app(slot.name, slot.settings, slot.provider, slot.behaviour)
                config = uvicorn.Config(
                    app,
                    http="h11",
                    ws="none",
                    lifespan="off",  # _serve runs the session manager itself
                    log_config=None,
                    log_level="warning",
                    access_log=False,
                    timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
                )
                server = _Uvicorn(config, on_started=self._server_started)
                self._serving.append((server, sessions, slot.sock))
        except Exception as exc:
            self._fail(exc)
            return
        if self._stop_requested.is_set():  # stop() may have run before _loop was set
            self._begin_stop()
        await asyncio.gather(
            *(self._serve(server, sessions, sock) for server, sessions, sock in self._serving)
        )

    async def _serve(
        self, server: _Uvicorn, sessions: StreamableHTTPSessionManager, sock: socket.socket
    ) -> None:
        """Serve until the sandbox stops; then end the MCP sessions first, then uvicorn.

        Ending the sessions first ends their open event streams, so uvicorn's graceful
        shutdown finds idle connections instead of waiting its timeout out.
        """
        stopping = self._stopping
        assert stopping is not None
        try:
            async with sessions.run():
                serving = asyncio.create_task(server.serve(sockets=[sock]))
                stopped = asyncio.create_task(stopping.wait())
                try:
                    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopped.cancel()
            server.exit_now.set()
            await serving
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # uvicorn raises SystemExit when startup fails
            self._fail(exc)

    def _server_started(self) -> None:
        self._started_count += 1
        if self._started_count == len(self._slots):
            self._ready.set()

    def _begin_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
        self._ready.set()


# ---------------------------------------------------------------------------------------------
# Using a token
# ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _session_with_token(
    url: str, access_token: str, timeout: float
) -> AsyncIterator[ClientSession]:
    rejected: list[int] = []

    async def note_rejection(response: httpx2.Response) -> None:
        if response.status_code in (401, 403):
            rejected.append(response.status_code)

    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=timeout,
        trust_env=False,
        event_hooks={"response": [note_rejection]},
    ) as http:
        try:
            async with (
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                yield session
        except Exception as exc:
            if rejected:
                raise TokenRejected(url, rejected[0]) from exc
            raise


async def list_tools_with_token(url: str, access_token: str, *, timeout: float = 10.0) -> list[str]:
    """The names of the tools the MCP server at ``url`` lists to the bearer of ``access_token``.

    Raises:
        TokenRejected: The server answered 401 or 403.
    """
    async with _session_with_token(url, access_token, timeout) as session:
        result = await session.list_tools()
    return [tool.name for tool in result.tools]


async def whoami_with_token(url: str, access_token: str, *, timeout: float = 10.0) -> str:
    """Call the ``whoami`` tool with ``access_token``: the name of the server that answered.

    Raises:
        TokenRejected: The server answered 401 or 403.
        SandboxError: The tool did not answer with text.
    """
    async with _session_with_token(url, access_token, timeout) as session:
        result = await session.call_tool("whoami", {})
    for block in result.content:
        if isinstance(block, TextContent):
            return block.text
    raise SandboxError(f"whoami at {url} answered without text: {result!r}")
