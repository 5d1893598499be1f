"""Pasting into a real terminal: the default paste source is the TTY on stdin, and it stops
reading when the logins end, so the host's next line is the host's."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import IO

import httpx
import pytest

from runner.sandbox import Sandbox

PARENT = """
import json, sys, threading
from portlease import Registry
from runner import TokenStore, authorize_many_sync

config, tmp = json.loads(sys.argv[1]), sys.argv[2]
# browser and progress are called from different threads: one line at a time, whole.
lock = threading.Lock()

def say(*words):
    with lock:
        print(*words, flush=True)

def browser(url, spec):  # a person who reads the URL but must paste the result
    say("URL", spec.name, url)

results = authorize_many_sync(
    config, store=TokenStore(tmp + "/tokens"), registry=Registry(tmp + "/leases"),
    browser=browser, timeout=40,
    progress=lambda event: say("PROGRESS", event.name, str(event)),
)
print("RESULTS", json.dumps({n: r.ok for n, r in results.items()}), flush=True)
print("HOST GOT", sys.stdin.readline().strip(), flush=True)
"""


def read_until(stream: IO[str], prefix: str, seen: list[str]) -> str:
    for line in stream:  # bounded by the test timeout and the parent's own timeout
        seen.append(line)
        if line.startswith(prefix):
            return line.rstrip("\n")
    raise AssertionError(f"no {prefix!r} line; the parent said:\n{''.join(seen)}")


def callback_url(authorization_url: str) -> str:
    """What a browser would land on: the AS redirects straight back (automatic consent)."""
    response = httpx.get(authorization_url, follow_redirects=False, timeout=10, trust_env=False)
    assert response.status_code in (302, 303, 307)
    return response.headers["location"]


@pytest.mark.timeout(90)
def test_pasted_urls_reach_their_logins_and_the_reader_stops(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    with Sandbox(servers=2) as sandbox:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, json.dumps(sandbox.config()), str(tmp_path)],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        os.close(slave)
        try:
            assert parent.stdout is not None
            seen: list[str] = []
            urls = {}
            for _ in range(2):
                _, name, url = read_until(parent.stdout, "URL ", seen).split(" ", 2)
                urls[name] = url
            os.write(master, b"this is not a URL\n")
            read_until(parent.stdout, "PROGRESS None ", seen)  # the person is told
            for name in sorted(urls, reverse=True):
                os.write(master, f"  '{callback_url(urls[name])}'  \n".encode())
            results = json.loads(read_until(parent.stdout, "RESULTS ", seen).split(" ", 1)[1])
            assert results == {"sandbox-1": True, "sandbox-2": True}
            os.write(master, b"the host's own line\n")
            assert read_until(parent.stdout, "HOST GOT", seen) == "HOST GOT the host's own line"
            assert parent.wait(timeout=10) == 0
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            if parent.stdout is not None:
                parent.stdout.close()
            os.close(master)
