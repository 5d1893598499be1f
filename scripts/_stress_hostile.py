"""Hostile traffic at one login's callback listener, for ``scripts/stress.py``.

:func:`attack` sends a fixed, bounded set of requests that a callback listener must turn
away without ending or spoiling the login (docs/architecture.md "Callbacks"): other paths,
``/favicon.ico``, a forged state, a wrong ``Host``, an oversized query, another method,
garbage bytes, the right state with a forged code on every path where it must not count.
It also opens two connections the caller keeps open while the login goes on: one that
never sends a byte (half-open) and one that stops in the middle of its request head
(slowloris). None of it may be answered with a success.

Invariants:
    - Loopback only: every connection goes to ``127.0.0.1``.
    - Bounded: a fixed number of requests, each with ``timeout``; nothing here sleeps or
      retries.
    - Never a token or a code: the forged code is the literal ``EVIL``; the state is used
      only in requests and never printed.
    - The kept connections are the caller's to close (:meth:`Attack.close`).
"""

from __future__ import annotations

import http.client
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlencode

HOST: Final = "127.0.0.1"

#: More than the listener's query limit (``runner._core._callback_query.MAX_QUERY_BYTES``, 8 KiB).
_OVERSIZED_PAD: Final = 9000


@dataclass
class Tally:
    """What hostile requests got back, over any number of listeners.

    Attributes:
        probes: requests sent.
        statuses: HTTP status -> how many requests were answered with it.
        closed: requests the listener closed or reset without an answer (garbage bytes).
        gone: requests refused at connect: no listener (any more) on the port.
        accepted: labels of requests answered with a success or a redirect: violations.
        unanswered: labels of requests that got no answer within the timeout: violations.
        kept: connections left open (half-open, slowloris) while the login went on.
    """

    probes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    closed: int = 0
    gone: int = 0
    accepted: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    kept: int = 0

    def add(self, other: Tally) -> None:
        self.probes += other.probes
        self.statuses.update(other.statuses)
        self.closed += other.closed
        self.gone += other.gone
        self.accepted += other.accepted
        self.unanswered += other.unanswered
        self.kept += other.kept

    def summary(self) -> str:
        refused = ", ".join(f"{n}x{s}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.probes} probes ({refused}; {self.closed} closed, {self.gone} refused at "
            "connect), "
            f"{self.kept} connections held open, {len(self.accepted)} accepted, "
            f"{len(self.unanswered)} unanswered"
        )


@dataclass
class Attack:
    """The outcome of :func:`attack` on one listener, and the connections it keeps open."""

    port: int
    tally: Tally
    kept: list[socket.socket]

    def close(self) -> None:
        """Close the kept connections (idempotent)."""
        for sock in self.kept:
            sock.close()
        self.kept = []


def attack(port: int, state: str, issuer: str, *, timeout: float, keep: bool = True) -> Attack:
    """Send the hostile set to the callback listener on ``127.0.0.1:port``.

    Args:
        port: The listener's port.
        state: The login's real state: a forged request carries it where only its
            path, ``Host``, size or method is wrong, so that only the listener's check of
            those can turn it away.
        issuer: The authorization server's issuer (sent as ``iss`` with the forged code).
        timeout: Seconds each request may take.
        keep: Open the two connections that stay open (for an attack while the login
            waits; one that races the consent keeps none: the listener may be gone).

    Returns:
        An :class:`Attack`; its ``kept`` connections stay open until :meth:`Attack.close`.
        A connection that could not be opened at all is counted as unanswered.
    """
    tally = Tally()
    kept: list[socket.socket] = []
    right = f"{HOST}:{port}"
    other_port = port + 1 if port < 65535 else port - 1
    forged = urlencode({"code": "EVIL", "state": state, "iss": issuer})
    wrong_state = urlencode({"code": "EVIL", "state": state + "x", "iss": issuer})
    oversized = urlencode(
        {"code": "EVIL", "state": state, "iss": issuer, "pad": "A" * _OVERSIZED_PAD}
    )
    denied_wrong_state = urlencode(
        {"error": "access_denied", "state": "not-" + state, "iss": issuer}
    )
    xss = urlencode(
        {"error": "<script>alert(1)</script>", "error_description": '"><img src=x>', "state": "x"}
    )
    requests: list[tuple[str, str, str, str]] = [  # label, method, target, Host
        ("favicon", "GET", "/favicon.ico", right),
        ("root", "GET", "/", right),
        ("other path, right state", "GET", f"/anything?{forged}", right),
        ("trailing slash, right state", "GET", f"/callback/?{forged}", right),
        ("forged state", "GET", f"/callback?{wrong_state}", right),
        ("wrong Host, right state", "GET", f"/callback?{forged}", f"evil.example:{port}"),
        ("wrong Host port, right state", "GET", f"/callback?{forged}", f"{HOST}:{other_port}"),
        ("oversized query, right state", "GET", f"/callback?{oversized}", right),
        ("POST, right state", "POST", f"/callback?{forged}", right),
        ("state twice", "GET", f"/callback?{forged}&state={quote(state)}", right),
        ("access_denied, forged state", "GET", f"/callback?{denied_wrong_state}", right),
        ("markup in error, forged state", "GET", f"/callback?{xss}", right),
    ]
    try:
        # Kept open for the rest of the login: never a byte, and a head never finished.
        if keep:
            kept.append(socket.create_connection((HOST, port), timeout=timeout))
            slow = socket.create_connection((HOST, port), timeout=timeout)
            kept.append(slow)
            slow.sendall(f"GET /callback?{forged} HTTP/1.1\r\nHost: {right}\r\n".encode())
            tally.kept += 2
    except OSError as exc:
        tally.unanswered.append(f"port {port}: kept connection: {type(exc).__name__}")
    for label, method, target, host in requests:
        tally.probes += 1
        _request(tally, port, label, method, target, host, timeout)
    tally.probes += 1
    _garbage(tally, port, timeout)
    return Attack(port, tally, kept)


def _request(
    tally: Tally, port: int, label: str, method: str, target: str, host: str, timeout: float
) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        if method == "POST":
            conn.putheader("Content-Length", "9")
        conn.endheaders(b"code=EVIL" if method == "POST" else None)
        response = conn.getresponse()
        response.read()
        status = response.status
    except TimeoutError:
        tally.unanswered.append(f"port {port}: {label}")
        return
    except ConnectionRefusedError:
        tally.gone += 1
        return
    except (ConnectionError, http.client.HTTPException):
        tally.closed += 1
        return
    except OSError as exc:
        tally.unanswered.append(f"port {port}: {label}: {type(exc).__name__}")
        return
    finally:
        conn.close()
    tally.statuses[status] += 1
    if status < 400:
        tally.accepted.append(f"port {port}: {label}: HTTP {status}")


def _garbage(tally: Tally, port: int, timeout: float) -> None:
    """A TLS ClientHello-like head and binary junk where an HTTP request should be."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)))
            sock.sendall(b"\r\n\r\n")
            answer = sock.recv(64)
    except TimeoutError:
        tally.unanswered.append(f"port {port}: garbage bytes")
        return
    except ConnectionRefusedError:
        tally.gone += 1
        return
    except OSError:
        tally.closed += 1
        return
    if answer.startswith(b"HTTP/1.1 2") or answer.startswith(b"HTTP/1.1 3"):
        tally.accepted.append(f"port {port}: garbage bytes: {answer[:12]!r}")
    elif answer.startswith(b"HTTP/"):
        try:
            tally.statuses[int(answer.split()[1])] += 1
        except (IndexError, ValueError):
            tally.closed += 1
    else:
        tally.closed += 1
