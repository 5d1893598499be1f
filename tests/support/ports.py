"""Loopback ports for tests."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """``count`` ports free on 127.0.0.1 right now (bound together so they differ, then
    closed), in ascending order. Another process may take one before the test does."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return sorted(s.getsockname()[1] for s in socks)
    finally:
        for s in socks:
            s.close()
