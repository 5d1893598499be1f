"""The command line's own error: light, so that ``main`` can catch it without loading a
command."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """A bad command line or configuration: one line on stderr, exit code 2."""
