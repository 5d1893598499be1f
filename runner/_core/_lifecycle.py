"""One login, as the parent follows it: states, the transition table, and the actions
each child message calls for. Pure (h11's way: bytes in, decisions out, no I/O).

The supervisor (``runner._parent._supervisor``) reads a message from the child, hands it to
``LoginMachine.advance`` and carries out the actions it gets back, in order; it decides
nothing about a message itself. Invariants:

- the state only moves along ``_TRANSITIONS`` (data, not code); ``LoginFailed`` ends any
  non-final state; any other message is a protocol violation;
- ``SUCCEEDED`` and ``FAILED`` are final: nothing is accepted after them;
- a login reaches ``SUCCEEDED`` through a person (``WAITING_FOR_USER`` -> ``EXCHANGING``;
  for a device login, ``CallbackAccepted(source="device")`` is the approval),
  or straight from ``LISTENING`` when the server asked for no login (``NotChallenged``:
  a success without tokens, ``Defer``). Stored and refreshed tokens never reach a child:
  the parent answers those itself;
- ``advance`` never raises: a protocol violation (a message out of turn, or the channel's
  complaint about a line) and tokens that do not decode become ``FAILED`` with one
  ``Fail(FlowCrashed(...))`` action; a final state is reached exactly with one ``Succeed``,
  ``Defer`` or ``Fail`` among its actions;
- ``Succeed`` comes before ``Save``: tokens the child delivered are a success from then on,
  whether or not saving them works (``FlowResult`` is ``ok`` exactly when it has tokens).

::

    STARTING --ServerReady--> LISTENING --AuthorizationStarted--> WAITING_FOR_USER
        LISTENING --DeviceAuthorizationStarted--> WAITING_FOR_USER   (a device login)
        LISTENING --NotChallenged--> SUCCEEDED             (no login needed yet)
        WAITING_FOR_USER --CallbackRejected--> WAITING_FOR_USER
        WAITING_FOR_USER --CallbackAccepted--> EXCHANGING --TokensIssued--> SUCCEEDED
        any non-final --LoginFailed--> FAILED
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from runner._core import _events as events
from runner._core._messages import (
    AuthorizationStarted,
    CallbackAccepted,
    CallbackRejected,
    DeviceAuthorizationStarted,
    LoginFailed,
    Message,
    NotChallenged,
    ProtocolViolation,
    ServerReady,
    TokensIssued,
)
from runner._core._stored import StoredLogin
from runner.errors import FlowCrashed, FlowError, error_from_wire

__all__ = [
    "Action",
    "ArmPastes",
    "CloseListenerCopy",
    "Defer",
    "DisarmPastes",
    "Fail",
    "LoginMachine",
    "LoginState",
    "MarkInteractive",
    "OpenBrowser",
    "Report",
    "Save",
    "Step",
    "Succeed",
    "next_state",
]


class LoginState(enum.Enum):
    STARTING = "starting"
    LISTENING = "listening"
    WAITING_FOR_USER = "waiting for user"
    EXCHANGING = "exchanging"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (LoginState.SUCCEEDED, LoginState.FAILED)


_S = LoginState
_TRANSITIONS: Final[Mapping[tuple[LoginState, type[Message]], LoginState]] = types.MappingProxyType(
    {
        (_S.STARTING, ServerReady): _S.LISTENING,
        (_S.LISTENING, AuthorizationStarted): _S.WAITING_FOR_USER,
        (_S.LISTENING, DeviceAuthorizationStarted): _S.WAITING_FOR_USER,
        (_S.LISTENING, NotChallenged): _S.SUCCEEDED,
        (_S.WAITING_FOR_USER, CallbackRejected): _S.WAITING_FOR_USER,
        (_S.WAITING_FOR_USER, CallbackAccepted): _S.EXCHANGING,
        (_S.EXCHANGING, TokensIssued): _S.SUCCEEDED,
    }
)


def next_state(state: LoginState, message: Message) -> LoginState:
    """The state after ``message``; raises ``ProtocolViolation`` if it may not come now
    (a command, which only the parent sends, never may)."""
    if isinstance(message, LoginFailed) and not state.final:
        return LoginState.FAILED
    try:
        return _TRANSITIONS[state, type(message)]
    except KeyError:
        raise ProtocolViolation(
            f"{type(message).__name__} is not allowed while {state.value}"
        ) from None


# --- actions: what the supervisor carries out, in the order given ----------------------


@dataclass(frozen=True)
class CloseListenerCopy:
    """The child serves the leased socket: close the parent's copy (the record stays)."""


@dataclass(frozen=True)
class Report:
    """Tell the host's ``progress`` of this event."""

    event: events.Event


@dataclass(frozen=True)
class MarkInteractive:
    """A person is needed: the result says so even if the login then fails."""


@dataclass(frozen=True)
class ArmPastes:
    """Route pasted callbacks carrying ``state`` to this login's child."""

    state: str = field(repr=False)


@dataclass(frozen=True)
class OpenBrowser:
    """Have the host's ``browser`` open ``url`` (in the background: it may block)."""

    url: str = field(repr=False)


@dataclass(frozen=True)
class DisarmPastes:
    """A callback was accepted: pastes are no longer this login's."""


@dataclass(frozen=True)
class Succeed:
    """The login has its tokens: a success from now on, whatever fails later."""

    login: StoredLogin
    interactive: bool


@dataclass(frozen=True)
class Defer:
    """The server asked for no login: a success without tokens (``FlowResult.deferred``)."""


@dataclass(frozen=True)
class Save:
    """Write the login to the token store (a failure is a warning, never a lost result)."""

    login: StoredLogin


@dataclass(frozen=True)
class Fail:
    """The login ended with ``error``."""

    error: FlowError


Action = (
    CloseListenerCopy
    | Report
    | MarkInteractive
    | ArmPastes
    | OpenBrowser
    | DisarmPastes
    | Succeed
    | Defer
    | Save
    | Fail
)


@dataclass(frozen=True)
class Step:
    """Where one message took the login, and what to do about it."""

    state: LoginState
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class LoginMachine:
    """The decisions for one login: ``name`` (for error messages) and the callback URL
    its child serves (for the progress sentence)."""

    name: str
    callback_url: str

    def advance(self, state: LoginState, received: Message | ProtocolViolation) -> Step:
        """The step after ``received``: a message, or the channel's complaint about a line
        that is none. Never raises."""
        if isinstance(received, ProtocolViolation):
            return self._crashed(f"the child broke the protocol: {received}")
        try:
            after = next_state(state, received)
        except ProtocolViolation as exc:
            return self._crashed(f"the child broke the protocol: {exc}")
        if isinstance(received, TokensIssued):
            try:
                login = StoredLogin.from_dict(received.record)
            except ValueError as exc:  # InvalidLoginRecord, its only error
                return self._crashed(f"the child sent bad tokens: {exc}")
            return Step(after, (Succeed(login, received.interactive), Save(login)))
        return Step(after, self._actions(received))

    def _actions(self, message: Message) -> tuple[Action, ...]:
        # Only messages next_state let through reach here (child messages, in turn), and
        # TokensIssued is decided in advance() (its tokens may not decode).
        match message:
            case ServerReady():
                return (CloseListenerCopy(), Report(events.Listening(self.name, self.callback_url)))
            case AuthorizationStarted(url=url, state=state):
                return (
                    MarkInteractive(),
                    ArmPastes(state),
                    Report(events.WaitingForBrowser(self.name)),
                    OpenBrowser(url),
                )
            case DeviceAuthorizationStarted():
                # No pastes armed (no callback will come) and no browser opened: the person
                # uses any device of theirs; the event tells the host what to show them.
                return (
                    MarkInteractive(),
                    Report(
                        events.DeviceCodeIssued(
                            self.name,
                            message.user_code,
                            message.verification_uri,
                            message.verification_uri_complete,
                            message.expires_in,
                        )
                    ),
                )
            case CallbackRejected(reason=reason):
                return (Report(events.PasteRefused(self.name, reason)),)
            case CallbackAccepted(source=source):
                return (DisarmPastes(), Report(events.CallbackReceived(self.name, source)))
            case NotChallenged(status=status):
                return (Defer(), Report(events.NotChallenged(self.name, status)))
            case LoginFailed(kind=kind, message=text):
                return (Fail(error_from_wire(kind, text)),)
            case _:  # pragma: no cover - next_state refuses every other message
                raise AssertionError(f"no actions for {type(message).__name__}")

    def _crashed(self, why: str) -> Step:
        return Step(LoginState.FAILED, (Fail(FlowCrashed(f"{self.name}: {why}")),))
