"""A message channel over one end of a socket pair: framing for ``runner._core._messages``.

Invariants: sends are serialised (a lock), so two tasks never interleave a line;
``receive`` returns whole messages, None at end of stream, and raises
``ProtocolViolation`` for junk or a line over ``MAX_LINE_BYTES`` (never buffers
without bound). Used by both the parent and the child.
"""

from __future__ import annotations

import socket

import anyio
import anyio.abc

from runner._core._messages import MAX_LINE_BYTES, Message, ProtocolViolation, decode, encode

__all__ = ["Channel"]


class Channel:
    """Line-framed messages over a byte stream."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._send_lock = anyio.Lock()
        self._eof = False

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> Channel:
        """Wrap a connected stream socket; the channel then owns it."""
        return cls(await anyio.abc.SocketStream.from_socket(sock))

    async def send(self, message: Message) -> None:
        """Send one message; raises ``anyio.BrokenResourceError`` if the peer is gone."""
        data = encode(message)
        async with self._send_lock:
            await self._stream.send(data)

    async def receive(self) -> Message | None:
        """The next message, or None once the peer has closed its end."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return decode(line)
            if len(self._buffer) > MAX_LINE_BYTES:
                raise ProtocolViolation("a line longer than the limit")
            if self._eof:
                if self._buffer:
                    raise ProtocolViolation("the stream ended inside a message")
                return None
            try:
                self._buffer += await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                self._eof = True

    async def aclose(self) -> None:
        await self._stream.aclose()
