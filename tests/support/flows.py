"""Helpers shared by the authorize_many integration tests (test_flows_*, test_browser_e2e,
test_fast_path, test_stress_logins): authorization URLs and callbacks, raw HTTP to a
callback listener, processes, leases and descriptors, progress, threads.

Nothing here starts a process or a thread on import; every helper that waits does so for an
event or by bounded polling of an observable condition, never by a bare sleep.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil

from portlease import LeaseRecord, Registry
from runner import FlowResult, authorize_many
from runner.events import Event

from support.waiting import wait_until

HOST = "127.0.0.1"


# --- authorization URLs and callbacks ---------------------------------------------------------


def query_params(url: str) -> dict[str, str]:
    """The single-valued query parameters of ``url`` (a repeated one is an error here)."""
    params = parse_qs(urlsplit(url).query, keep_blank_values=True)
    repeated = [name for name, values in params.items() if len(values) != 1]
    assert not repeated, f"repeated query parameters {repeated} in {url.split('?')[0]}"
    return {name: values[0] for name, values in params.items()}


@dataclass(frozen=True)
class CallbackTarget:
    """Where a login's callback listener is, from its authorization URL."""

    redirect_uri: str
    port: int
    path: str
    state: str


def callback_target(auth_url: str) -> CallbackTarget:
    params = query_params(auth_url)
    redirect_uri = params["redirect_uri"]
    parts = urlsplit(redirect_uri)
    assert parts.hostname == HOST, redirect_uri
    assert parts.port is not None, redirect_uri
    return CallbackTarget(redirect_uri, parts.port, parts.path, params["state"])


def authorization_response(auth_url: str, *, timeout: float = 10.0) -> str:
    """Perform the authorization request at the sandbox's authorization server without
    following its redirect; returns the callback URL it redirects to (code, state, iss)."""
    with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout) as client:
        response = client.get(auth_url)
    assert response.status_code in (302, 303, 307), (response.status_code, response.text[:300])
    location = response.headers["location"]
    assert location.startswith(f"http://{HOST}:"), location.split("?")[0]
    return location


async def authorization_response_async(auth_url: str, *, timeout: float = 10.0) -> str:
    """:func:`authorization_response`, with an async client."""
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout) as c:
        response = await c.get(auth_url)
    assert response.status_code in (302, 303, 307), (response.status_code, response.text[:300])
    location = response.headers["location"]
    assert location.startswith(f"http://{HOST}:"), location.split("?")[0]
    return location


# --- raw HTTP to a callback listener ----------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP response; ``headers`` keys are lower-case."""

    label: str
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def http_request(
    port: int,
    method: str,
    target: str,
    *,
    label: str = "",
    host_header: str | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
) -> Reply:
    """Send one request with ``http.client`` (``Host`` defaults to ``127.0.0.1:port``)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host_header if host_header is not None else f"{HOST}:{port}")
        if body is not None or method in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(label or f"{method} {target[:60]}", response.status, headers, data)
    finally:
        conn.close()


# --- processes, leases, descriptors -----------------------------------------------------------


def process_gone(pid: int, started: float | None = None) -> bool:
    """The process ``pid`` no longer runs: absent, a zombie, or a newer process reusing it."""
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > 0.01:
            return True
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_processes_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait (bounded) until every pid is gone; returns those still running."""
    pids = list(pids)
    wait_until(lambda: all(process_gone(pid) for pid in pids), timeout)
    return [pid for pid in pids if not process_gone(pid)]


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL whatever of ``pids`` still runs (cleanup only)."""
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
        except psutil.NoSuchProcess:
            pass


def lease_for_port(registry_dir: Path, port: int, *, stale: bool = False) -> LeaseRecord | None:
    """The lease record of ``port`` (read with a Registry instance of its own)."""
    for record in Registry(registry_dir).list(stale=stale):
        if record.port == port:
            return record
    return None


def wait_for_server_pid(registry_dir: Path, port: int, timeout: float = 5.0) -> int:
    """The pid of the child serving ``port``, as its lease record names it."""
    found: list[int] = []

    def check() -> bool:
        record = lease_for_port(registry_dir, port)
        if record is not None and record.server_pid is not None:
            found.append(record.server_pid)
            return True
        return False

    assert wait_until(check, timeout), f"no lease with a server pid for port {port}"
    return found[-1]


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what they point at."""
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listdir's own descriptor, closed by now
            continue
    return fds


def child_processes() -> set[int]:
    """The pids of this process's descendants."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


# --- progress ---------------------------------------------------------------------------------


@dataclass
class ProgressLog:
    """A ``progress`` callable that keeps every event, and when it came."""

    entries: list[tuple[float, str | None, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.entries.append((time.monotonic(), event.name, str(event)))
            self.events.append(event)

    def messages(self, name: str | None) -> list[str]:
        with self.lock:
            return [m for _, n, m in self.entries if n == name]

    def first_time(self, name: str | None, prefix: str) -> float | None:
        with self.lock:
            return next((t for t, n, m in self.entries if n == name and m.startswith(prefix)), None)

    def dump(self) -> str:
        with self.lock:
            return "\n".join(f"{n}: {m}" for _, n, m in self.entries)


# --- what a call leaves running ---------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """The pids of ``pid``'s descendants (empty if it is gone)."""
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def still_running(before: set[int]) -> list[str]:
    """Descendants started since ``before`` that still run (not zombies), described."""
    left = []
    for pid in sorted(child_processes() - before):
        if not process_gone(pid):
            try:
                left.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())}")
            except psutil.NoSuchProcess:
                continue
    return left


async def authorize_and_look(
    before: set[int], *args: Any, **kwargs: Any
) -> tuple[dict[str, FlowResult], list[str]]:
    """``authorize_many``, then what it left running, looked at before any cleanup (so a
    leak cannot hide behind it); whatever was left is killed afterwards."""
    try:
        results = await authorize_many(*args, **kwargs)
        return results, still_running(before)
    finally:
        kill_all(child_processes() - before)


# --- threads the runner starts ----------------------------------------------------------------


def threads_named(prefix: str) -> list[threading.Thread]:
    """The live threads whose name starts with ``prefix`` (``runner-progress``,
    ``runner-store-<name>``, ``runner-browser-<name>``, ``runner-release-<name>``)."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def join_threads(prefix: str, timeout: float) -> list[str]:
    """Join (bounded, in total) the live threads named ``prefix...``; returns the names of
    those still alive."""
    deadline = time.monotonic() + timeout
    for thread in threads_named(prefix):
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threads_named(prefix)]


def unblock_fifo(path: Path) -> bool:
    """Let a reader blocked in ``open()`` of the FIFO ``path`` go on (it then reads end of
    file); returns whether one was waiting. Never blocks: without a reader, opening a FIFO
    for writing with ``O_NONBLOCK`` fails at once (``ENXIO``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True
