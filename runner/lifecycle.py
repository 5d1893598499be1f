"""What a login's child may say next: the parent's state machine for one login. Pure.

Invariants:

- the state only moves along ``_TRANSITIONS``; any other message is a
  ``ProtocolViolation`` (the parent treats that child as crashed);
- ``SUCCEEDED`` and ``FAILED`` are final: nothing is accepted after them;
- a login reaches ``SUCCEEDED`` either through a person (``WAITING_FOR_USER`` ->
  ``EXCHANGING``) or silently (stored or refreshed tokens, straight from ``LISTENING``).

::

    STARTING --ServerReady--> LISTENING --AuthorizationStarted--> WAITING_FOR_USER
        LISTENING --TokensIssued--> SUCCEEDED              (no person needed)
        WAITING_FOR_USER --CallbackRejected--> WAITING_FOR_USER
        WAITING_FOR_USER --CallbackAccepted--> EXCHANGING --TokensIssued--> SUCCEEDED
        any non-final --LoginFailed--> FAILED
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from typing import Final

from runner.messages import (
    AuthorizationStarted,
    CallbackAccepted,
    CallbackRejected,
    LoginFailed,
    Message,
    ProtocolViolation,
    ServerReady,
    TokensIssued,
)

__all__ = ["LoginState", "next_state"]


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
        (_S.LISTENING, TokensIssued): _S.SUCCEEDED,
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
