"""The command line's own error and its one escaping of text for the terminal: light, so
that ``main`` can use them without loading a command."""

from __future__ import annotations

__all__ = ["CommandError", "printable"]


def printable(text: str) -> str:
    """``text`` safe to write to a terminal, on one line: every character that is not
    printable (control characters, escape sequences' ESC, newlines, tabs, bidirectional
    overrides and other format characters, lone surrogates) is written as Python writes it
    in a string literal (``\\x1b``, ``\\u202e``, ``\\udc80``); everything else is kept.
    Config-derived text (a server's name, a reason, a path) is printed only through this."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class CommandError(Exception):
    """A bad command line or configuration: one line on stderr, exit code 2."""
