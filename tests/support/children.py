"""Python children that talk to the test in lines: a child prints a line when it reached a
state (``say``) and waits for a line from the test to go on (``hear``). Every child is killed
and reaped when its block ends."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator

#: What every child's code can use: ``say(*parts)`` prints a line, ``hear()`` reads one.
CHILD_PRELUDE = """
import json, os, socket, sys, time
from portlease import Registry
def say(*parts):
    print(*parts, flush=True)
def hear():
    return sys.stdin.readline().strip()
"""


@contextlib.contextmanager
def child(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python child running ``code`` with line-based pipes; killed and reaped on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def read_line(proc: subprocess.Popen[str]) -> str:
    """The child's next line (it must not have exited first)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"child {proc.pid} exited early (rc={proc.poll()})"
    return line.strip()


def tell(proc: subprocess.Popen[str], line: str) -> None:
    """Send the child a line (what its ``hear()`` returns)."""
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
