"""Logging in to the sandbox's servers: a browser that consents (``browser=`` of
``authorize_many`` and ``runner.provider``, called from a thread of the runner's, once per
login), ``authorize_many`` with the tests' defaults, and stored logins made to expire."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from portlease import Registry
from runner import FlowResult, ServerSpec, TokenStore, authorize_many
from runner._core._stored import StoredLogin
from runner.sandbox import Sandbox

from support.flows import callback_target

#: A time long past: written as a stored login's expiry to make it expired.
LONG_AGO = 1.0


class SandboxBrowser:
    """A person who consents at once, through the sandbox's automated consent browser
    (``Sandbox.browser``), with a record of each call: ``calls`` lists the logins it was
    called for, in order, and ``count`` is how many there were.

    Gated (``gate`` given), for tests that do something while every login waits for its
    person: each call first notes where its login listens (``listening``: name -> callback
    port and state) and tells ``arrived`` (if given) the names noted so far; then it waits
    for ``gate`` (at most ``gate_timeout`` seconds) before the consent. A gated browser never
    raises into the runner: a gate that did not open ("no go") and a consent that failed (a
    killed login's listener is gone) are kept in ``failures``, by login name.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        gate: threading.Event | None = None,
        gate_timeout: float = 45.0,
        arrived: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.gate = gate
        self.gate_timeout = gate_timeout
        self.arrived = arrived
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.listening: dict[str, tuple[int, str]] = {}
        self.failures: dict[str, str] = {}

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.calls)

    def __call__(self, url: str, spec: ServerSpec) -> None:
        with self.lock:
            self.calls.append(spec.name)
        if self.gate is None:
            self.sandbox.browser(url, spec)
            return
        target = callback_target(url)
        with self.lock:
            self.listening[spec.name] = (target.port, target.state)
            noted = frozenset(self.listening)
        if self.arrived is not None:
            self.arrived(noted)
        if not self.gate.wait(self.gate_timeout):
            with self.lock:
                self.failures[spec.name] = "no go"
            return
        try:
            self.sandbox.browser(url, spec)
        except Exception as exc:  # a killed login's listener is gone: its result says so
            with self.lock:
                self.failures[spec.name] = f"{type(exc).__name__}: {exc}"


def refused_browser(url: str, spec: ServerSpec) -> None:
    """A browser no login may open: it raises."""
    raise AssertionError(f"{spec.name}: no browser may be opened here")


async def no_pastes() -> AsyncIterator[str]:
    """``pastes=``: nobody pastes a callback URL (without it, the runner reads the terminal)."""
    return
    yield


async def login(
    sandbox: Sandbox, tmp_path: Path, servers: Any = None, **kwargs: Any
) -> dict[str, FlowResult]:
    """``authorize_many`` of the sandbox's servers (or ``servers``), with a store in
    ``tmp_path / "tokens"`` and a registry in ``tmp_path / "leases"``; unless ``kwargs`` say
    otherwise, a :class:`SandboxBrowser`, no pastes and a 60 s timeout."""
    kwargs.setdefault("browser", SandboxBrowser(sandbox))
    return await authorize_many(
        sandbox.config() if servers is None else servers,
        store=TokenStore(tmp_path / "tokens"),
        registry=Registry(tmp_path / "leases"),
        timeout=kwargs.pop("timeout", 60),
        pastes=kwargs.pop("pastes", no_pastes()),
        **kwargs,
    )


def expire(store: TokenStore, name: str) -> StoredLogin:
    """Make ``name``'s stored login long expired (its refresh token is left as it was); returns
    the record as saved."""
    stored = store.load(name)
    assert stored is not None
    stored.expires_at = LONG_AGO
    store.save(name, stored)
    return stored
