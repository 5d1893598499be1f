"""Small ASGI tools for the sandbox's gates: a bounded request body, replayed; whole responses.

The gates (:mod:`~runner.sandbox.resource_gate`, :mod:`~runner.sandbox.token_gate`) look at a
request's body before the SDK's handler does. :func:`read_body` reads it, bounded;
:func:`replay` hands it on to the next app as if unread; :func:`respond` sends a response the
gate makes itself; :func:`capture` runs an app and keeps its whole response.

Invariants:
    - Every read is bounded: a body over ``limit`` bytes is not read further, and the caller
      answers 413; a client that disconnects mid-body ends the request without an answer.
    - The replayed body is the body read, byte for byte, in one message; after it, the
      original ``receive`` (which reports the disconnect) takes over.
    - Nothing here logs, so no token, code or secret in a body is ever written anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "BODY_LIMIT",
    "Captured",
    "TooLarge",
    "capture",
    "read_body",
    "replay",
    "respond",
    "respond_json",
]

BODY_LIMIT: Final = 4 << 20
"""The largest request body a gate reads: 4 MiB, the limit of the SDK's (2.x) own endpoints."""
_MAX_MESSAGES: Final = 1 << 16  # bounds the read loop whatever the chunking


class TooLarge(Exception):
    """The request body is over the limit."""


async def read_body(receive: Receive, limit: int = BODY_LIMIT) -> bytes | None:
    """The whole request body; None if the client disconnected first.

    Raises:
        TooLarge: The body is over ``limit`` bytes (or came in too many pieces).
    """
    chunks: list[bytes] = []
    size = 0
    for _ in range(_MAX_MESSAGES):
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
    raise TooLarge


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to ``receive``."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


async def respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send a whole response."""
    raw = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
        (b"cache-control", b"no-store"),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def respond_json(
    send: Send, status: int, content: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> None:
    """Send a JSON response."""
    await respond(send, status, json.dumps(content).encode(), headers=headers)


@dataclass(slots=True)
class Captured:
    """A whole response of an app: its status, headers and body (until it ended)."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    async def send_to(self, send: Send) -> None:
        """Send it on unchanged."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


async def capture(app: ASGIApp, scope: Scope, receive: Receive) -> Captured:
    """Run ``app`` on the request and keep its response instead of sending it.

    For small, non-streaming answers (the token endpoint's), bounded by :data:`BODY_LIMIT`.
    """
    captured = Captured()
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured.status = message["status"]
            captured.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body" and not captured.complete:
            chunks.append(message.get("body", b""))
            if sum(map(len, chunks)) > BODY_LIMIT:
                raise TooLarge
            captured.complete = not message.get("more_body", False)

    await app(scope, receive, keep)
    captured.body = b"".join(chunks)
    return captured
