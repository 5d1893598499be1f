"""Bind and listen on a loopback address. I/O leaf.

Invariants:
    * ``open_listener`` returns a socket that is bound AND listening, or raises ``OSError`` with
      nothing left open.
    * Never ``SO_REUSEPORT`` (it would let a second socket bind the same port and steal
      connections). On Windows ``SO_EXCLUSIVEADDRUSE`` (and never ``SO_REUSEADDR``, which there
      lets another socket take over a bound port).
    * On POSIX ``SO_REUSEADDR`` is set, on purpose. It allows binding a port that still has
      connections in TIME_WAIT from a previous listener (a redirect listener that served a
      browser and was released leaves those for a minute; without the option the next flow
      queued for that fixed port would get EADDRINUSE). It does not allow binding over a LISTEN
      socket on Linux, and over an exact address:port that is bound on BSD/macOS; uvicorn sets
      it too. Its one loosening (two not-yet-listening sockets may share an address on Linux)
      is closed by listening at once: ``listen`` then fails for the second, which is reported
      like a failed bind.
    * Sockets are not inheritable (the PEP 446 default for every socket Python creates, so no
      extra syscall): whoever hands one to a child passes it on purpose (``pass_fds``).
"""

from __future__ import annotations

import socket
import sys
from typing import Final

__all__ = ["BACKLOG", "open_listener"]

#: Listen backlog: browsers open several connections at once (pre-connect, favicon).
BACKLOG: Final = 128


def open_listener(address: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """Bind ``address:port`` (port 0: the kernel chooses) and listen.

    Raises:
        OSError: bind or listen failed (``EADDRINUSE``, ``EACCES``, ...); the socket is closed.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
