"""The ``Sandbox`` façade: N servers, their knobs, their life, and what a caller sees of them.

:class:`Sandbox` names the servers ``sandbox-1`` ... ``sandbox-N``, gives each a
:class:`~runner.sandbox.behaviour.Behaviour` (sandbox-wide knobs, per-server overrides),
binds their sockets, runs them on a :class:`~runner.sandbox.serving.ServerLoop`, and answers
what tests and the demo ask: the servers, a hermes-style configuration, the tokens a server
issued, the grants it served, the refresh tokens it was shown, the clients it authorized, and
an automated consent browser (:class:`~runner.sandbox.browser.ConsentBrowser`).

Invariants:
    - A sandbox starts once and is never reused: ``new`` -> ``running`` -> ``closed``.
    - :meth:`Sandbox.start` either returns with every server accepting connections or
      raises with everything started so far stopped again.
    - :meth:`Sandbox.stop` (``__exit__``) is idempotent, releases requests the knobs hold
      back, closes every socket and joins the thread within a bound.
    - Knobs are checked when the sandbox is built: an override names an existing server and
      known fields, or the constructor raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import types
from collections.abc import Mapping
from types import TracebackType
from typing import Literal, Self

from runner.sandbox.behaviour import AUTH_METHODS, CIMD_PORTS, Behaviour, CimdMode, RefreshFault
from runner.sandbox.browser import ConsentBrowser
from runner.sandbox.errors import SandboxError
from runner.sandbox.provider import COUNTERS, Provider
from runner.sandbox.serving import SandboxServer, ServerLoop, Slot, bind_loopback
from runner.sandbox.settings import auth_settings

__all__ = ["Sandbox"]


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class Sandbox:
    """N sandbox servers on one background event loop (see the module docstring).

    Args:
        servers: How many servers (``sandbox-1`` ... ``sandbox-N``).
        consent, send_iss, advertise_iss, wrong_iss, authorize_delay, hang, access_token_ttl,
        open_initialize, step_up_scope, refresh_fault, refresh_delay, auth_methods,
        registration, preregistered, cimd, cimd_ports, device, device_interval,
        device_expires_in, device_slow_down:
            The :class:`Behaviour` of every server (each field is documented there):
            ``initialize`` without a token, a step-up scope for ``tools/call``, faults and
            delays of refresh grants, accepted client authentication methods, dynamic
            registration, a pre-registered client, client ID metadata documents.
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
        open_initialize: bool = False,
        step_up_scope: str | None = None,
        refresh_fault: RefreshFault = "none",
        refresh_delay: float = 0.0,
        auth_methods: tuple[str, ...] = AUTH_METHODS,
        registration: bool = True,
        preregistered: tuple[str, str, str] | None = None,
        cimd: CimdMode = "off",
        cimd_ports: tuple[int, ...] = CIMD_PORTS,
        device: bool = False,
        device_interval: int = 1,
        device_expires_in: int = 600,
        device_slow_down: int = 0,
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
            open_initialize=open_initialize,
            step_up_scope=step_up_scope,
            refresh_fault=refresh_fault,
            refresh_delay=refresh_delay,
            auth_methods=auth_methods,
            registration=registration,
            preregistered=preregistered,
            cimd=cimd,
            cimd_ports=cimd_ports,
            device=device,
            device_interval=device_interval,
            device_expires_in=device_expires_in,
            device_slow_down=device_slow_down,
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
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._consent = ConsentBrowser(timeout=browser_timeout)

        self._lock = threading.Lock()
        self._state = _State.NEW
        self._slots: list[Slot] = []
        self._by_name: dict[str, Slot] = {}
        self._ports: frozenset[int] = frozenset()
        self._servers: ServerLoop | None = None

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
                sock = bind_loopback()
                port = sock.getsockname()[1]
                behaviour = self._behaviours[name]
                settings = auth_settings(
                    port,
                    extra_scopes=[behaviour.step_up_scope] if behaviour.step_up_scope else [],
                    registration=behaviour.registration,
                )
                slot = Slot(name, sock, port, settings, behaviour)
                self._slots.append(slot)
                self._by_name[name] = slot
            self._ports = frozenset(slot.port for slot in self._slots)
            self._servers = ServerLoop(self._slots, thread_name=f"sandbox-loop-{id(self):x}")
            self._servers.start(self._startup_timeout)
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
        alive = self._servers.stop(self._stop_timeout) if self._servers is not None else False
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

    def grant_counts(self, name: str) -> Mapping[str, int]:
        """What the server called ``name`` has served so far (a copy; any thread):
        ``"authorize"``: ``/authorize`` requests that issued a code; ``"authorization_code"``
        and ``"refresh_token"``: token grants of that type that issued tokens.

        Raises:
            KeyError: No server has that name.
        """
        provider = self._slot(name).provider
        if provider is None:
            return types.MappingProxyType(dict.fromkeys(COUNTERS, 0))
        return provider.grant_counts()

    def refresh_presentations(self, name: str) -> Mapping[str, int]:
        """How many times each refresh token was presented at the token endpoint of the server
        called ``name`` (``grant_type=refresh_token``, whatever the answer, faults included):
        ``{refresh_token: count}`` (a copy; any thread). The tokens are held in memory only.

        Raises:
            KeyError: No server has that name.
        """
        provider = self._slot(name).provider
        if provider is None:
            return types.MappingProxyType({})
        return provider.refresh_presentations()

    def authorized_client_ids(self, name: str) -> list[str]:
        """The ``client_id`` of every authorization request that issued a code at the server
        called ``name``, in order (a copy; any thread): a registered client's ID, the
        pre-registered one, or a client ID metadata document URL.

        Raises:
            KeyError: No server has that name.
        """
        provider = self._slot(name).provider
        return provider.authorized_client_ids() if provider is not None else []

    def revoke_refresh_tokens(self, name: str) -> None:
        """Make the server called ``name`` forget every refresh token it has issued, as
        when the user revokes the client's access: a later refresh is ``invalid_grant``.
        Its access tokens stay valid until they expire. Returns once done (any thread).

        Raises:
            KeyError: No server has that name.
            SandboxError: The sandbox is not running.
        """
        provider = self._slot(name).provider
        if provider is None or self._servers is None:
            raise SandboxError("the sandbox is not running")
        self._servers.call(provider.forget_refresh_tokens, self._stop_timeout)

    def approve_device(self, user_code: str) -> bool:
        """The simulated person: enter ``user_code`` at its server's verification page and
        approve it (or deny it, when that server's ``consent`` is ``"deny"``). True when a
        pending device login had that code; False otherwise (unknown, already decided, or
        expired). Returns once done (any thread).

        Raises:
            SandboxError: The sandbox is not running.
        """
        if self._servers is None:
            raise SandboxError("the sandbox is not running")
        found = False
        for slot in self._slots:
            provider = slot.provider
            if provider is None or not slot.behaviour.device:
                continue

            def decide(provider: Provider = provider) -> None:
                nonlocal found
                found = found or provider.decide_device(user_code)

            self._servers.call(decide, self._stop_timeout)
        return found

    def device_polls(self, name: str) -> list[tuple[float, str]]:
        """Every poll of a device code at the token endpoint of the server called ``name``:
        ``(time.monotonic(), answer)``, in order; ``answer`` is the error code it got
        (``authorization_pending``, ``slow_down``, ...) or ``"tokens"`` (a copy; any thread).

        Raises:
            KeyError: No server has that name.
        """
        provider = self._slot(name).provider
        return provider.device_polls() if provider is not None else []

    def issued_device_codes(self, name: str) -> set[str]:
        """The device codes the server called ``name`` has issued so far (a copy; any thread),
        for tests that check a client never shows one.

        Raises:
            KeyError: No server has that name.
        """
        provider = self._slot(name).provider
        return provider.issued_device_codes() if provider is not None else set()

    @property
    def browser_calls(self) -> int:
        """How many times :meth:`browser` has been called."""
        return self._consent.calls

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
        return self._consent.visit(url, self._ports)

    def __repr__(self) -> str:
        return f"<Sandbox {self._state.value} servers={[s.public.url for s in self._slots]}>"

    def _slot(self, name: str) -> Slot:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no sandbox server is called {name!r}") from None
