"""The supervisor: owns the logins of one ``authorize_many`` call, their children and leases.

The parent's side of docs/architecture.md "Shape". It decides nothing about a child's
messages itself (``runner._core._lifecycle`` does, purely), nor about stored logins
(``runner._core._renewal``), nor about ports (``runner._core._port_policy``); it carries out
their answers. Everything it touches is injected (token store, port
registry, launcher, browser, progress), so it runs in unit tests with no process at all.
Invariants:

- a login's port is leased (bound, listening) before its child starts; the child inherits
  that very socket and the parent closes its copy once the child reports ``ServerReady``
  (``CloseListenerCopy``); nothing is bound twice;
- every child has an owner: the task running its login, through ``start_child``
  (``runner._parent._child_lifetime``), whose exit, shielded from cancellation, sends ``Shutdown``,
  then terminates, then kills, and always waits for the exit; the lease is handed over to
  the child's pid right after the start, and released only after the child exited -- on
  success, failure, timeout, cancellation and Ctrl-C alike;
- one login's failure is its own ``FlowResult``; it never cancels another login, and a
  bug of ours during one login becomes that login's ``FlowCrashed``;
- a ``FlowResult`` is ``ok`` exactly when it carries tokens: a login whose child delivered
  tokens stays a success whatever fails afterwards (saving them, stopping the child,
  closing its channel, releasing its lease: a warning each);
- the timeout is enforced here as the hard stop (``move_on_after(limit)``), even for a hung
  child; the child's own deadline comes a moment (0.25 s) before, so it can say why;
- pastes are routed only to a login armed for their state, and only while its child runs;
  the paste reader lives exactly as long as the logins (cancelled when the last ends), and
  its source is closed within ``CALLBACK_GRACE``;
- the event loop never waits on a file or the host's code (``runner._parent._offloop``), and the
  host's ``progress`` is only ever queued (``runner._parent._progress.ProgressPump.tell``);
- the parent, never a child, writes the token store.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Final, Protocol

import anyio
import anyio.abc
import anyio.to_thread
from mcp.shared.auth import OAuthMetadata

from portlease import LeaseTimeout, PortBusy
from runner._core._events import (
    Event,
    Finished,
    LoggingIn,
    LookingUpMetadata,
    MetadataLookupFailed,
    PasteNotUsed,
    Refreshing,
    RefreshNotDone,
    RegisteringDynamically,
    StoredLoginNotReused,
    UsingStoredLogin,
)
from runner._core._identity import presents_document
from runner._core._lifecycle import (
    Action,
    ArmPastes,
    CloseListenerCopy,
    Defer,
    DisarmPastes,
    Fail,
    LoginMachine,
    LoginState,
    MarkInteractive,
    OpenBrowser,
    Report,
    Save,
    Succeed,
)
from runner._core._messages import DeliverCallback, Message, ProtocolViolation, StartLogin
from runner._core._port_policy import IfTaken, PortPlan, plan_port
from runner._core._renewal import (
    GiveUp,
    LogIn,
    LoginRequest,
    Rediscover,
    Refresh,
    RefreshFailure,
    Situation,
    UseStored,
    decide,
)
from runner._core._routing import Deliver, PasteRouter
from runner._core._spec import FlowResult, ServerSpec
from runner._core._stored import StoredLogin
from runner._io._channel import Channel
from runner._parent._child_lifetime import ChildNotReady, RunningChild, keep_tail, start_child
from runner._parent._launch import ChildProcess, Launcher
from runner._parent._notices import Notices
from runner._parent._offloop import (
    Browser,
    LoginStore,
    cimd_refused,
    holding,
    load_login,
    mark_cimd_refused,
    open_browser,
    release_lease,
    save_login,
)
from runner._parent._rediscovery import discover_metadata
from runner._parent._refresher import SharedTlsContext, refresh_login
from runner.errors import (
    CallbackPortBusy,
    ClientMetadataRefused,
    FlowCrashed,
    FlowError,
    FlowTimeout,
    HostCallbackWarning,
    LoginCleanupWarning,
    LoginLockTimeout,
    LoginLockUnavailable,
    RefreshFailed,
    RefreshRefused,
    TokenStoreError,
)

__all__ = [
    "CALLBACK_GRACE",
    "REFRESH_TIMEOUT",
    "Discoverer",
    "Outcome",
    "PortLease",
    "PortRegistry",
    "Refresher",
    "Supervisor",
]

logger = logging.getLogger("runner")

# Seconds the host's code gets once the logins are over: to take the last progress
# sentences, and for a pastes iterator to close.
CALLBACK_GRACE: Final = 2.0
# How much earlier than ours the child's own deadline comes, so that it can say why it
# stopped before we stop it.
_CHILD_DEADLINE_MARGIN: Final = 0.25
# How much later than the login's deadline its wait for the login lock gives up: the
# deadline comes first and explains the wait (``Outcome.doing``).
_LOCK_SLACK: Final = 1.0
#: The longest a refresh in the parent may take (the login's deadline, if sooner): a token
#: endpoint that does not answer leaves the rest of the time to the full login.
REFRESH_TIMEOUT: Final = 30.0
# The most questions one login asks the renewal policy: a refresh, a lookup of the server's
# metadata, a refresh with what it found, then its answer (``runner._core._renewal``).
_MAX_DECISIONS: Final = 4

Refresher = Callable[[StoredLogin, float], Awaitable[StoredLogin]]
"""Refreshes a login at its token endpoint within a timeout
(``runner._parent._refresher.refresh_login``); raises ``RefreshRefused`` or
``RefreshFailed``."""

Discoverer = Callable[[str, float, "str | None"], Awaitable["OAuthMetadata | None"]]
"""Looks up the authorization server metadata of a server URL within a timeout, given a
challenge's ``resource_metadata`` (``runner._parent._rediscovery.discover_metadata``); raises
``RefreshFailed`` (temporary) when the lookup failed for the moment."""


class PortLease(Protocol):
    """What the supervisor needs of a lease (``portlease.Lease``)."""

    @property
    def port(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def socket(self) -> socket.socket: ...
    def url(self, path: str = "/") -> str: ...
    def hand_over(self, pid: int) -> None: ...
    def close_socket(self) -> None: ...
    def release(self) -> None: ...


class PortRegistry(Protocol):
    """What the supervisor needs of a registry (``portlease.Registry``)."""

    def acquire(
        self,
        owner: str,
        *,
        port: int | Collection[int] = 0,
        host: str = "127.0.0.1",
        wait: float = 0.0,
        meta: Mapping[str, str] | None = None,
    ) -> PortLease: ...


class Outcome:
    """What one login has come to so far (filled in as its actions are carried out)."""

    def __init__(self) -> None:
        self.login: StoredLogin | None = None  # the delivered login record: a success
        self.error: FlowError | None = None
        self.port: int | None = None
        self.interactive = False
        self.deferred = False  # the server asked for no login: ok without tokens
        self.doing: str | None = None  # what is being waited for, to explain a timeout


class Supervisor:
    """Owns the logins of one ``authorize_many`` call: their children and leases."""

    def __init__(
        self,
        *,
        store: LoginStore,
        registry: PortRegistry,
        launcher: Launcher,
        browser: Browser,
        interactive: bool,
        progress: Callable[[Event], None],
        notices: Notices,
        tls: SharedTlsContext | None = None,
        refresher: Refresher | None = None,
        discoverer: Discoverer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.launcher = launcher
        self.browser = browser
        self.interactive = interactive
        self.progress = progress  # never raises, never blocks: ProgressPump.tell
        self.notices = notices
        self.tls = tls  # for refreshes here; None: each builds its own
        self.refresher = refresher if refresher is not None else self._refresh_at_endpoint
        self.discoverer = discoverer if discoverer is not None else self._discover
        self.clock = clock
        self.router = PasteRouter()
        self.channels: dict[str, Channel] = {}  # armed logins' channels, for their pastes

    # --- pastes ---------------------------------------------------------------------

    async def read_pastes(self, pastes: AsyncIterable[str]) -> None:
        """Route pastes until the source ends or fails (then: no more pastes) or the
        logins are over (cancelled); the source is closed either way."""
        try:
            iterator = aiter(pastes)
        except Exception as exc:  # not an async iterable: the host's mistake
            self._pastes_failed(exc)
            return
        try:
            while True:
                try:
                    text = await anext(iterator)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    self._pastes_failed(exc)
                    return
                await self._route_paste(text)
        finally:
            await self._close_pastes(iterator)

    async def _route_paste(self, text: object) -> None:
        if not isinstance(text, str):
            self.progress(
                PasteNotUsed(None, f"ignored a paste that is not text ({type(text).__name__})")
            )
            return
        decision = self.router.route(text)
        if isinstance(decision, Deliver):
            channel = self.channels.get(decision.login)
            if channel is not None:
                try:
                    await channel.send(DeliverCallback(query=decision.target))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    self.progress(PasteNotUsed(decision.login, "that login has just ended"))
        elif decision.message:
            self.progress(PasteNotUsed(None, decision.message))

    def _pastes_failed(self, exc: Exception) -> None:
        self.notices.warn(
            HostCallbackWarning,
            f"pastes raised {type(exc).__name__}: {exc}; no more pasted URLs are read "
            "(logins can still finish in the browser)",
        )

    async def _close_pastes(self, iterator: AsyncIterator[str]) -> None:
        """Close the source (an async generator's ``finally`` runs now, not at garbage
        collection), shielded from the cancellation that ended the reading, bounded."""
        aclose = getattr(iterator, "aclose", None)
        if not callable(aclose):
            return
        with anyio.move_on_after(CALLBACK_GRACE, shield=True) as scope:
            try:
                await aclose()
            except Exception as exc:
                self.notices.warn(
                    HostCallbackWarning, f"pastes raised on close: {type(exc).__name__}: {exc}"
                )
        if scope.cancelled_caught:
            self.notices.warn(
                HostCallbackWarning,
                f"pastes did not close within {CALLBACK_GRACE:g} s; abandoned",
            )

    # --- one login ------------------------------------------------------------------

    async def run_login(
        self,
        spec: ServerSpec,
        limit: float,
        results: dict[str, FlowResult],
        request: LoginRequest | None = None,
    ) -> None:
        """Run one login to its ``FlowResult`` (stored in ``results``); never raises but
        for cancellation. ``request`` carries a host's challenge (``runner._hosts._provider``)."""
        started = time.monotonic()
        outcome = Outcome()
        late: FlowError | None = None  # what went wrong after the outcome, or instead of one
        try:
            with anyio.move_on_after(limit) as deadline:
                await self._login(spec, limit, started + limit, outcome, request or LoginRequest())
            settled = outcome.error is not None or outcome.login is not None or outcome.deferred
            if deadline.cancelled_caught and not settled:
                doing = f" ({outcome.doing} did not finish)" if outcome.doing else ""
                outcome.error = FlowTimeout.no_login_within(spec.name, limit, doing)
        except FlowError as exc:
            late = exc
        except Exception as exc:  # a bug of ours must still end as this login's result
            logger.exception("login %s failed unexpectedly", spec.name)
            late = FlowCrashed(f"{spec.name}: {type(exc).__name__}: {exc}")
        # ok exactly when there are tokens or the server asked for none (FlowResult's
        # contract): tokens the child delivered are a success, whatever failed after them.
        error: FlowError | None = None
        if outcome.login is not None or outcome.deferred:
            if late is not None:
                self.notices.warn(LoginCleanupWarning, f"{spec.name}: logged in, but then: {late}")
        else:
            error = outcome.error or late
            if error is None:
                error = FlowCrashed(f"{spec.name}: the login ended without an outcome")
        results[spec.name] = FlowResult(
            name=spec.name,
            ok=error is None,
            tokens=None if outcome.login is None else outcome.login.tokens,
            error=error,
            port=outcome.port,
            interactive=outcome.interactive,
            elapsed=time.monotonic() - started,
            deferred=outcome.deferred and outcome.login is None,
        )
        self.progress(Finished(spec.name, results[spec.name]))

    async def _login(
        self,
        spec: ServerSpec,
        limit: float,
        deadline: float,
        outcome: Outcome,
        request: LoginRequest,
    ) -> None:
        # One login per server across processes: a sibling logging in to (or refreshing)
        # this server holds the lock; its result is read below once it is done. Kept if the
        # deadline cancels the wait, to explain the timeout. The lock's own timeout comes a
        # moment after the deadline, so that the deadline explains it.
        outcome.doing = "another process's login to this server"
        entered = False
        try:
            async with holding(self.store, spec.name, deadline - time.monotonic() + _LOCK_SLACK):
                entered = True
                outcome.doing = None
                await self._login_held(spec, limit, deadline, outcome, request)
        except LoginLockTimeout as exc:
            if entered:
                raise
            raise FlowTimeout(
                f"{spec.name}: another process is logging in to this server ({exc})"
            ) from None
        except TokenStoreError as exc:
            if entered:
                raise  # from the login itself, not the lock: not ours to explain
            # No lock (a directory in its place, an unsafe directory): fail closed. Without it
            # a sibling may refresh the same token, and one of us would write a dead record
            # over the other's fresh one.
            outcome.doing = None
            outcome.error = LoginLockUnavailable(
                f"{spec.name}: its login lock cannot be taken ({exc}); nothing was refreshed "
                "or written",
                path=exc.path,
            )

    async def _login_held(
        self,
        spec: ServerSpec,
        limit: float,
        deadline: float,
        outcome: Outcome,
        request: LoginRequest,
    ) -> None:
        """The login, once this process holds the server's lock: carry out what the renewal
        policy (``runner._core._renewal.decide``) answers until it settles: stored tokens, a
        refresh here (no port, no child), a lookup of lost metadata, or a login through the
        authorization server (a port and a child)."""
        # Kept if the deadline cancels the read, to explain the timeout.
        outcome.doing = "reading its stored login"
        stored = await load_login(self.store, spec.name, self.notices)
        outcome.doing = None
        if stored is not None and stored.server_url != spec.url:
            # Tokens and a registration belong to the server that issued them.
            self.progress(StoredLoginNotReused(spec.name, stored.server_url))
        situation = Situation(
            name=spec.name,
            stored=stored,
            server_url=spec.url,
            client_id=spec.client_id,
            scope=spec.scope,
            now=self.clock(),
            interactive=self.interactive,
            margin=request.margin,
            challenge=request.challenge,
            rejected=request.rejected,
        )
        for _ in range(_MAX_DECISIONS):
            match decide(situation):
                case UseStored(login=login, reason=reason):
                    self.progress(UsingStoredLogin(spec.name, reason))
                    outcome.login = login
                    return
                case GiveUp(error=error):
                    outcome.error = error
                    return
                case Refresh(login=login):
                    failure = await self._refresh(spec, login, deadline, outcome)
                    if failure is None:
                        return
                    situation = dataclasses.replace(
                        situation, refresh_failure=failure, now=self.clock()
                    )
                case Rediscover(login=login):
                    situation = await self._rediscover(spec, login, deadline, situation, outcome)
                case LogIn() as decision:
                    self.progress(LoggingIn(spec.name, decision.reason))
                    await self._log_in(spec, limit, deadline, decision, outcome)
                    return
        raise AssertionError("the renewal policy did not settle")  # pragma: no cover

    async def _refresh(
        self, spec: ServerSpec, stored: StoredLogin, deadline: float, outcome: Outcome
    ) -> RefreshFailure | None:
        """Refresh ``stored`` here, in the parent (no port, no child, no person). Refreshed:
        saved, ``outcome.login``, and None. Otherwise what it came to, for the policy; the
        store is left as it was (a new login replaces it only once it succeeds)."""
        self.progress(Refreshing(spec.name))
        outcome.doing = "refreshing its stored login"
        try:
            login = await self.refresher(stored, _refresh_budget(deadline))
        except RefreshRefused as exc:
            self.progress(RefreshNotDone(spec.name, exc))
            dead_client = exc.code == "invalid_client"
            return RefreshFailure.DEAD_CLIENT if dead_client else RefreshFailure.DEAD_GRANT
        except RefreshFailed as exc:
            self.progress(RefreshNotDone(spec.name, exc))
            return RefreshFailure.UNAVAILABLE if exc.temporary else RefreshFailure.REFUSED
        finally:
            outcome.doing = None
        outcome.login = login
        await save_login(self.store, spec.name, login, self.notices)
        return None

    async def _rediscover(
        self,
        spec: ServerSpec,
        stored: StoredLogin,
        deadline: float,
        situation: Situation,
        outcome: Outcome,
    ) -> Situation:
        """Look up the authorization server of a stored login that lost its metadata; the
        situation to decide again from (a failure of the moment keeps the login)."""
        self.progress(LookingUpMetadata(spec.name))
        outcome.doing = "looking up its authorization server"
        challenge = situation.challenge
        hint = challenge.resource_metadata if challenge is not None else None
        try:
            metadata = await self.discoverer(stored.server_url, _refresh_budget(deadline), hint)
        except RefreshFailed as exc:
            self.progress(MetadataLookupFailed(spec.name, exc))
            return dataclasses.replace(
                situation, rediscovered=True, refresh_failure=RefreshFailure.UNAVAILABLE
            )
        finally:
            outcome.doing = None
        found = stored if metadata is None else stored.replace(oauth_metadata=metadata)
        return dataclasses.replace(situation, stored=found, rediscovered=True, now=self.clock())

    async def _refresh_at_endpoint(self, login: StoredLogin, timeout: float) -> StoredLogin:
        return await refresh_login(login, timeout=timeout, tls=self.tls)

    async def _discover(
        self, server_url: str, timeout: float, resource_metadata: str | None
    ) -> OAuthMetadata | None:
        tls = await self.tls.get() if self.tls is not None else None
        return await discover_metadata(
            server_url, timeout=timeout, tls=tls, resource_metadata=resource_metadata
        )

    async def _log_in(
        self,
        spec: ServerSpec,
        limit: float,
        deadline: float,
        decision: LogIn,
        outcome: Outcome,
    ) -> None:
        """A login through the authorization server: a leased port and a child. A Client ID
        Metadata Document the server refuses is marked refused in the store, and the login
        tried once more with dynamic registration (a person consents again)."""
        refused = await cimd_refused(self.store, spec.name, self.notices)
        document = presents_document(
            document_url=spec.client_metadata_url,
            ports=spec.client_metadata_ports,
            client_id=spec.client_id,
            client_info=decision.client_info,
            metadata=decision.metadata,
            refused=refused,
        )
        presented = await self._login_on_a_lease(spec, limit, deadline, decision, document, outcome)
        if presented and isinstance(outcome.error, ClientMetadataRefused):
            self.progress(RegisteringDynamically(spec.name, outcome.error))
            await mark_cimd_refused(self.store, spec.name, self.notices)
            outcome.error = None
            await self._login_on_a_lease(spec, limit, deadline, decision, False, outcome)

    async def _login_on_a_lease(
        self,
        spec: ServerSpec,
        limit: float,
        deadline: float,
        decision: LogIn,
        document: bool,
        outcome: Outcome,
    ) -> bool:
        """One child on its own lease (a document's port when ``document``); whether the
        document was presented (only on one of its ports)."""
        plan = plan_port(
            spec,
            decision.client_info,
            deadline - time.monotonic(),
            document_ports=spec.client_metadata_ports if document else frozenset(),
        )
        lease = await self._lease(spec, plan)
        outcome.port = lease.port
        presented = spec.client_metadata_url if lease.port in plan.document_ports else None
        try:
            await self._run_child(spec, limit, deadline, decision, presented, lease, outcome)
        finally:
            with anyio.CancelScope(shield=True):
                await self._release(spec, lease)
        return presented is not None

    async def _run_child(
        self,
        spec: ServerSpec,
        limit: float,
        deadline: float,
        decision: LogIn,
        document: str | None,
        lease: PortLease,
        outcome: Outcome,
    ) -> None:
        """Start the login's child and follow it to its outcome; the child has exited
        when this returns or raises."""
        machine = LoginMachine(name=spec.name, callback_url=lease.url(spec.callback_path))
        stderr_tail = bytearray()
        failure: Exception | None = None
        # The helpers (the stderr drain, the browser call) outlive the child's block, so
        # that stopping the child is never cancelled by cancelling them.
        async with anyio.create_task_group() as helpers:

            def started(process: ChildProcess) -> None:
                lease.hand_over(process.pid)
                if process.stderr is not None:
                    helpers.start_soon(keep_tail, process.stderr, stderr_tail)

            try:
                async with start_child(
                    self.launcher,
                    lease.socket,
                    functools.partial(
                        self._start_message, spec, limit, deadline, decision, document, lease
                    ),
                    on_started=started,
                    on_cleanup_failure=functools.partial(self._cleanup_failed, spec),
                ) as child:
                    try:
                        await self._converse(machine, spec, child, lease, helpers, outcome)
                        if not (outcome.error or outcome.login or outcome.deferred):
                            code = await child.exit_code()
                            outcome.error = _crashed(spec, code, stderr_tail)
                    finally:
                        self.router.disarm(spec.name)
                        self.channels.pop(spec.name, None)
            except ChildNotReady as exc:
                if exc.received is None:
                    outcome.error = _crashed(spec, exc.process.returncode, stderr_tail)
                else:
                    step = machine.advance(LoginState.STARTING, exc.received)
                    await self._carry_out(step.actions, spec, None, lease, helpers, outcome)
            except Exception as exc:
                # Kept out of the task group, which would wrap it in an ExceptionGroup.
                failure = exc
            helpers.cancel_scope.cancel()
        if failure is not None:
            raise failure

    def _start_message(
        self,
        spec: ServerSpec,
        limit: float,
        deadline: float,
        decision: LogIn,
        document: str | None,
        lease: PortLease,
    ) -> StartLogin:
        client = decision.client_info
        challenge = decision.challenge
        return StartLogin(
            name=spec.name,
            server_url=spec.url,
            redirect_host=lease.host,
            redirect_port=lease.port,
            callback_path=spec.callback_path,
            scope=decision.scope,
            client_id=spec.client_id,
            client_secret=spec.client_secret,
            client_name=spec.client_name,
            time_left=max(0.1, deadline - time.monotonic() - _CHILD_DEADLINE_MARGIN),
            configured_timeout=limit,
            interactive=self.interactive,
            client_info=None if client is None else client.model_dump(mode="json"),
            challenge=None if challenge is None else challenge.header(),
            client_metadata_url=document,
            token_endpoint_auth_method=spec.token_endpoint_auth_method,
            flow=spec.flow,
        )

    async def _converse(
        self,
        machine: LoginMachine,
        spec: ServerSpec,
        child: RunningChild,
        lease: PortLease,
        helpers: anyio.abc.TaskGroup,
        outcome: Outcome,
    ) -> None:
        """Follow the child's messages until its final one (or its silence: the caller
        explains that)."""
        step = machine.advance(LoginState.STARTING, child.ready)
        await self._carry_out(step.actions, spec, child.channel, lease, helpers, outcome)
        while not step.state.final:
            received: Message | ProtocolViolation | None
            try:
                received = await child.channel.receive()
            except ProtocolViolation as exc:
                received = exc
            if received is None:
                return
            step = machine.advance(step.state, received)
            await self._carry_out(step.actions, spec, child.channel, lease, helpers, outcome)

    async def _carry_out(
        self,
        actions: tuple[Action, ...],
        spec: ServerSpec,
        channel: Channel | None,
        lease: PortLease,
        helpers: anyio.abc.TaskGroup,
        outcome: Outcome,
    ) -> None:
        """Do what the login machine said, in its order."""
        for action in actions:
            match action:
                case CloseListenerCopy():
                    lease.close_socket()
                case Report(event=event):
                    self.progress(event)
                case MarkInteractive():
                    outcome.interactive = True
                case ArmPastes(state=state):
                    if channel is None:
                        raise RuntimeError("pastes armed for a child that is not running")
                    self.channels[spec.name] = channel
                    self.router.arm(spec.name, state)
                case OpenBrowser(url=url):
                    helpers.start_soon(
                        open_browser, self.browser, spec, url, self.notices, self.progress
                    )
                case DisarmPastes():
                    self.router.disarm(spec.name)
                case Succeed(login=login, interactive=interactive):
                    outcome.login = login
                    outcome.interactive = interactive
                case Defer():
                    outcome.deferred = True
                case Save(login=login):
                    await save_login(self.store, spec.name, login, self.notices)
                case Fail(error=error):
                    outcome.error = error

    async def _lease(self, spec: ServerSpec, plan: PortPlan) -> PortLease:
        """Carry out a port plan (``runner._core._port_policy``)."""
        try:
            return await _acquire(self.registry, spec, plan.port, plan.wait)
        except (PortBusy, LeaseTimeout) as exc:
            if plan.if_taken is IfTaken.FAIL:
                raise CallbackPortBusy(f"{spec.name}: {exc}") from exc
            if plan.if_taken is IfTaken.RAISE:
                raise
            self.progress(plan.taken(spec.name, exc))
            return await _acquire(self.registry, spec, 0, 0.0)

    async def _release(self, spec: ServerSpec, lease: PortLease) -> None:
        """Release the lease (call shielded, after the child exited); a failure is a
        warning: the record goes stale when this process exits."""
        try:
            await release_lease(spec.name, lease.release)
        except Exception as exc:
            self.notices.warn(
                LoginCleanupWarning,
                f"{spec.name}: its port lease could not be released "
                f"({type(exc).__name__}: {exc}); the record goes stale when this "
                "process exits",
            )

    def _cleanup_failed(self, spec: ServerSpec, message: str) -> None:
        self.notices.warn(LoginCleanupWarning, f"{spec.name}: {message}")


def _refresh_budget(deadline: float) -> float:
    """How long a refresh (or a lookup) may take: ``REFRESH_TIMEOUT``, or up to the
    login's deadline if that comes sooner."""
    return min(REFRESH_TIMEOUT, max(0.1, deadline - time.monotonic()))


def _crashed(spec: ServerSpec, code: int | None, stderr_tail: bytearray) -> FlowCrashed:
    """The error of a child that went away without a final word."""
    tail = bytes(stderr_tail).decode(errors="replace").strip().splitlines()
    why = f": {tail[-1]}" if tail else ""
    return FlowCrashed(
        f"{spec.name}: the login's child process exited ({code}) without an outcome{why}"
    )


async def _acquire(
    registry: PortRegistry, spec: ServerSpec, port: int | Collection[int], wait: float
) -> PortLease:
    """``registry.acquire`` in a worker thread, releasing the lease if we are cancelled
    while the thread was still getting it."""
    got: list[PortLease] = []

    def acquire() -> None:
        got.append(
            registry.acquire(
                owner=f"runner:{spec.name}",
                port=port,
                host=spec.redirect_host,
                wait=wait,
                meta={"server": spec.url},
            )
        )

    try:
        await anyio.to_thread.run_sync(acquire)
    except BaseException:
        for lease in got:
            lease.release()
        raise
    return got[0]
