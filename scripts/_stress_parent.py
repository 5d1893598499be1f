"""One parent process of ``scripts/stress.py``: a ``Runner`` logging in to its share of the
sandbox's servers, round after round, told what to do on stdin, telling what happened on
stdout.

Usage (by ``scripts/stress.py`` only): ``python scripts/_stress_parent.py OPTIONS_JSON``
with ``servers`` ({name: url}), ``sandbox_ports``, ``leases``, ``tokens`` (directories),
``rounds``, ``timeout`` (per login) and ``wait`` (the longest wait for a command).

Commands, one JSON object a line on stdin:
    ``{"cmd": "round", "round": r}``: start round r (forget this parent's stored logins,
    then log in to every server of its share at once).
    ``{"cmd": "go", "round": r}``: round r's consent browsers may complete the consent.
    Until then each waits, so the orchestrator can attack and kill logins while they wait.

Events, one JSON object a line on stdout (``"ev"``): ``ready`` (the zygote is up),
``waiting`` (a login's browser was called: its name, port and state, for the orchestrator
only), ``browser`` (a consent that did not reach its callback: expected for killed logins),
``result`` (one per login: ok, the error's class, a SHA-256 of the access token, never the
token), ``round_done`` (open descriptors, threads, zygotes started, warnings), ``done``.
Progress sentences and anything else go to stderr.

Invariants:
    - Every wait is bounded (``wait``); at end of stream on stdin every wait ends at once
      and the parent leaves its block (its zygote and children are stopped).
    - The browser never raises: a consent that fails is reported as an event, and the
      login's own result says the rest.
    - Descriptors and threads are counted once the round's browser calls have returned
      and the runner's daemon threads have ended (both bounded), so a thread on its way
      out cannot pass for a leak, and one that stays shows as one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread
import psutil

from portlease import Registry
from runner import Runner, ServerSpec, TokenStore
from runner.events import Event
from runner.sandbox.browser import ConsentBrowser

#: The name of anyio's worker threads: a pool that keeps idle threads for reuse (up to 10 s)
#: and never runs more than its limiter allows, so its size follows the peak concurrency of
#: ``to_thread`` calls and is not a leak.
ANYIO_WORKER = "AnyIO worker thread"

#: How long the runner's daemon threads (``runner-unlock-<name>``, ``runner-progress``, ...)
#: get to end after a call returned: each has done its work by then, and is only on its
#: way out (it tells the event loop, then returns), so a second is plenty; one that is
#: still alive after it is counted, and shows as growth.
THREAD_GRACE = 2.0

_out_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """One event line on stdout (whole lines, from any thread)."""
    line = json.dumps({"ev": event, **fields})
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Commands:
    """The commands read from stdin by a daemon thread; waited for with a bound."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, int]] = set()
        self._eof = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, name="stress-commands", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            try:
                command = json.loads(line)
                key = (str(command["cmd"]), int(command["round"]))
            except (ValueError, KeyError, TypeError):
                print(f"ignored a command that does not decode: {line!r}", file=sys.stderr)
                continue
            with self._changed:
                self._seen.add(key)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, cmd: str, round_: int, timeout: float) -> bool:
        """Whether ``cmd`` for ``round_`` came within ``timeout`` s (False at end of stream)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: (cmd, round_) in self._seen or self._eof, timeout
            ) and ((cmd, round_) in self._seen)


class GatedBrowser:
    """A consent browser that waits for the round's ``go`` before following the redirects."""

    def __init__(
        self,
        round_: int,
        commands: Commands,
        consent: ConsentBrowser,
        sandbox_ports: frozenset[int],
        wait: float,
    ) -> None:
        self._round = round_
        self._commands = commands
        self._consent = consent
        self._ports = sandbox_ports
        self._wait = wait
        self._running = 0
        self._idle = threading.Condition()

    def __call__(self, url: str, spec: ServerSpec) -> None:
        with self._idle:
            self._running += 1
        try:
            self._visit(url, spec)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _visit(self, url: str, spec: ServerSpec) -> None:
        query = parse_qs(urlsplit(url).query)
        redirect = urlsplit(query["redirect_uri"][0])
        emit(
            "waiting",
            round=self._round,
            name=spec.name,
            port=redirect.port,
            state=query["state"][0],
        )
        if not self._commands.wait_for("go", self._round, self._wait):
            emit("browser", round=self._round, name=spec.name, outcome="no go")
            return
        try:
            status = self._consent.visit(url, self._ports)
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
            emit("browser", round=self._round, name=spec.name, outcome=outcome)
            return
        if status != 200:
            emit("browser", round=self._round, name=spec.name, outcome=f"HTTP {status}")

    def join(self, timeout: float) -> bool:
        """Wait until no call runs (bounded); whether none does."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)


async def _no_pastes() -> AsyncIterator[str]:
    return
    yield


def _progress(event: Event) -> None:
    print(f"{time.monotonic():.3f} {event.name}: {event}", file=sys.stderr, flush=True)


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _join_runner_threads(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith("runner-"):
            thread.join(max(0.0, deadline - time.monotonic()))


def _zygotes() -> list[int]:
    found = []
    for child in psutil.Process().children():
        try:
            if (
                "runner._child._zygote" in child.cmdline()
                and child.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


async def run(options: dict[str, Any]) -> int:
    commands = Commands()
    servers: dict[str, str] = options["servers"]
    config = {name: {"url": url} for name, url in servers.items()}
    store = TokenStore(options["tokens"])
    wait = float(options["wait"])
    consent = ConsentBrowser(timeout=float(options["timeout"]) / 2)
    ports = frozenset(int(p) for p in options["sandbox_ports"])
    async with Runner(store=store, registry=Registry(options["leases"])) as runner:
        await runner.warm_up()
        emit("ready", pid=os.getpid(), zygotes=_zygotes())
        for round_ in range(1, int(options["rounds"]) + 1):
            started = await anyio.to_thread.run_sync(commands.wait_for, "round", round_, wait)
            if not started:
                print(f"no command for round {round_}: leaving", file=sys.stderr)
                return 1
            for name in servers:
                store.delete(name)  # a full login each round, not the stored one
            browser = GatedBrowser(round_, commands, consent, ports, wait)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results = await runner.authorize_many(
                    config,
                    timeout=float(options["timeout"]),
                    browser=browser,
                    pastes=_no_pastes(),
                    progress=_progress,
                )
            for name, result in results.items():
                emit(
                    "result",
                    round=round_,
                    name=name,
                    ok=result.ok,
                    error=None if result.error is None else type(result.error).__name__,
                    message=None if result.error is None else str(result.error),
                    token=None
                    if result.tokens is None
                    else _fingerprint(result.tokens.access_token),
                    port=result.port,
                )
            joined = await anyio.to_thread.run_sync(browser.join, wait)
            await anyio.to_thread.run_sync(_join_runner_threads, THREAD_GRACE)
            emit(
                "round_done",
                round=round_,
                fds=len(os.listdir("/proc/self/fd")),
                threads=threading.active_count(),
                thread_names=sorted(t.name for t in threading.enumerate()),
                pool=sum(1 for t in threading.enumerate() if t.name == ANYIO_WORKER),
                pool_limit=anyio.to_thread.current_default_thread_limiter().total_tokens,
                browsers_returned=joined,
                zygotes_started=runner.zygotes_started,
                zygotes=_zygotes(),
                warnings=[f"{w.category.__name__}: {w.message}" for w in caught],
            )
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(run, json.loads(sys.argv[1])))
