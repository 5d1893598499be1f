"""Which waiting login a pasted callback belongs to.

Pure: the parent feeds every line a person pastes to :meth:`PasteRouter.route` and carries
out the decision (forward to a child, or print the message and keep reading).

Invariants:

* A paste is delivered only to the one login whose armed state equals the paste's
  state, compared in constant time on bytes against every armed login; the router never
  guesses (no "the only login waiting", no partial matches).
* No two armed logins hold the same state, so at most one login matches.
* A disarmed login matches nothing; disarming is idempotent.
* No ``repr`` shows a state or a query (the query carries the authorization code).
* State lives on instances only.

Decisions:

* A blank paste (the person pressed Enter) is ``Unparseable("")``: an empty message means
  "nothing to report, keep reading" (``if decision.message: print(decision.message)``).
  It stays one of the three decisions rather than a fourth one to be handled everywhere.
* The router checks only the state; the login's child judges the whole paste again with
  ``runner._core._callback.judge_paste`` (path, issuer, error, code). Forward
  :attr:`Deliver.target`, which keeps the pasted path so that check still happens.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TypeAlias

from runner._core._paste import PasteProblem, parse_paste

__all__ = [
    "Deliver",
    "NoSuchLogin",
    "PasteRouter",
    "RouteDecision",
    "Unparseable",
]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Forward this paste to ``login``'s child.

    Attributes:
        login: the login whose state the paste carries.
        query: the pasted query string, still percent-encoded (it holds the code).
        path: the pasted path, when a full URL or ``/path?query`` was pasted.
    """

    login: str
    query: str
    path: str | None = None

    @property
    def target(self) -> str:
        """What to forward to the child: ``path?query``, or the query alone when no path
        was pasted; ``runner._core._callback.judge_paste`` reads either form."""
        return f"{self.path}?{self.query}" if self.path is not None else self.query

    def __repr__(self) -> str:
        return f"Deliver(login={self.login!r}, query=<redacted>, path={self.path!r})"


@dataclass(frozen=True, slots=True)
class NoSuchLogin:
    """The paste is a callback, but of no login that is waiting; the person may paste again."""

    message: str


@dataclass(frozen=True, slots=True)
class Unparseable:
    """The paste is not a callback; ``message`` says what to paste ("" for a blank line)."""

    message: str


RouteDecision: TypeAlias = Deliver | NoSuchLogin | Unparseable


def _as_bytes(value: str) -> bytes:
    # compare_digest on str accepts ASCII only; bytes work for any text.
    return value.encode("utf-8", "surrogatepass")


class PasteRouter:
    """The states of the logins that wait for a callback, and routing of pastes to them."""

    def __init__(self) -> None:
        self._states: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"PasteRouter(waiting={self.waiting!r})"

    @property
    def waiting(self) -> tuple[str, ...]:
        """The armed logins, in the order they were first armed."""
        return tuple(self._states)

    def arm(self, login: str, state: str) -> None:
        """Record that ``login`` waits for a callback carrying ``state``.

        Re-arming a login replaces its state (it keeps its place in :attr:`waiting`).

        Raises:
            ValueError: ``login`` or ``state`` is empty, or another armed login holds the
                same state; the router is then unchanged.
        """
        if not login:
            raise ValueError("a login needs a non-empty name")
        if not state:
            raise ValueError(f"login {login!r} cannot be armed with an empty state")
        wanted = _as_bytes(state)
        for other, held in self._states.items():
            if other != login and hmac.compare_digest(held, wanted):
                # The state itself is not quoted: it is a secret of both logins.
                raise ValueError(
                    f"login {login!r} cannot be armed with the state that login {other!r} "
                    "already holds"
                )
        self._states[login] = wanted

    def disarm(self, login: str) -> None:
        """Forget ``login`` (it ended); forgetting an unknown login does nothing."""
        self._states.pop(login, None)

    def route(self, text: str) -> RouteDecision:
        """Decide where a pasted line goes.

        Returns:
            :class:`Deliver` to the login whose state the paste carries;
            :class:`Unparseable` when it is not a callback (empty message for a blank line);
            :class:`NoSuchLogin` when its state is no waiting login's, naming those waiting.
        """
        pasted = parse_paste(text)
        if isinstance(pasted, PasteProblem):
            return Unparseable(pasted.message)
        if pasted.state is None:  # parse_paste never returns this; kept total for callers
            return Unparseable("that callback URL has no state parameter")
        got = _as_bytes(pasted.state)
        matches = [login for login, held in self._states.items() if hmac.compare_digest(held, got)]
        if len(matches) == 1:
            return Deliver(login=matches[0], query=pasted.query, path=pasted.path)
        if not self._states:
            return NoSuchLogin(
                "no login is waiting for a callback; this URL may be from an earlier attempt"
            )
        return NoSuchLogin(
            f"this URL belongs to no login that is waiting (waiting: {', '.join(self.waiting)}); "
            "it may be from an earlier attempt"
        )
