"""Hosts in processes of their own, for tests that kill, interrupt or race them: one parent
script started as a subprocess and read line by line, and groups of processes released
together through a pipe.

Every wait here is for a line or an exit, bounded by a timeout; never a bare sleep.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from support.waiting import bounded

PARENT_SCRIPT = r'''
"""A host's process; argv[1] is a JSON object of options: config (servers), tokens and leases
(directories), mode ("sync": authorize_many_sync, else anyio.run(authorize_many)),
start_method and interactive (null: the runner's default), log (a file each browser call is
appended to, or null), gate (a FIFO, or null), ports (the sandbox's) and browser, what the
person does once the call is reported ("BROWSER <name> <callback port>" on stdout):
"return" (a GUI browser was started; no consent ever comes), "block" (a console browser
still runs: the call does not return), or "consent" (after the gate opens, if there is one:
the sandbox's automated consent). Prints STARTED before the call and RESULTS after it."""
import hashlib
import json
import sys
import threading
from urllib.parse import parse_qs, urlsplit

import anyio

from portlease import Registry
from runner import TokenStore, authorize_many, authorize_many_sync

options = json.loads(sys.argv[1])
if options["browser"] == "consent":
    from runner.sandbox.browser import ConsentBrowser


def browser(url, spec):
    if options["log"]:
        with open(options["log"], "a") as log:
            log.write(f"{spec.name}\n")
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    print(f"BROWSER {spec.name} {urlsplit(redirect).port}", flush=True)
    if options["browser"] == "block":
        threading.Event().wait(120)
    elif options["browser"] == "consent":
        if options["gate"]:
            with open(options["gate"]) as gate:  # blocks until the test opens it for writing
                gate.read()
        ConsentBrowser(timeout=10).visit(url, frozenset(options["ports"]))


def progress(event):
    print(f"progress {event.name}: {event}", file=sys.stderr, flush=True)


kwargs = dict(
    store=TokenStore(options["tokens"]),
    registry=Registry(options["leases"]),
    timeout=60,
    browser=browser,
    progress=progress,
)
if options["start_method"] is not None:
    kwargs["start_method"] = options["start_method"]
if options["interactive"] is not None:
    kwargs["interactive"] = options["interactive"]
print("STARTED", flush=True)
if options["mode"] == "sync":
    results = authorize_many_sync(options["config"], **kwargs)
else:
    results = anyio.run(lambda: authorize_many(options["config"], **kwargs))
print("RESULTS " + json.dumps({
    name: {
        "ok": r.ok,
        "error": None if r.error is None else type(r.error).__name__,
        "interactive": r.interactive,
        "token": None if r.tokens is None
        else hashlib.sha256(r.tokens.access_token.encode()).hexdigest(),
    }
    for name, r in results.items()
}), flush=True)
'''


class ParentProcess:
    """A parent script in a subprocess whose stdout lines are read by a thread."""

    def __init__(
        self,
        script: Path,
        args: list[str],
        *,
        new_session: bool = False,
    ) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=new_session,
        )
        self.stderr_chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._err_reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_chunks.append(raw)

    @property
    def stderr(self) -> str:
        return b"".join(self.stderr_chunks).decode(errors="replace")

    def expect_lines(self, prefix: str, count: int, timeout: float) -> list[str]:
        """Wait for ``count`` stdout lines starting with ``prefix`` (an event, not a sleep)."""
        deadline = time.monotonic() + timeout
        found: list[str] = []
        while len(found) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {count} {prefix!r} lines within {timeout} s (got {found}); "
                    f"stderr:\n{self.stderr[-3000:]}"
                )
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"the parent exited ({self.proc.wait()}) before {count} {prefix!r} lines "
                    f"(got {found}); stderr:\n{self.stderr[-3000:]}"
                )
            if line.startswith(prefix):
                found.append(line)
        return found

    def results(self, timeout: float = 60) -> dict[str, dict[str, Any]]:
        """The RESULTS of :data:`PARENT_SCRIPT`, per login: ok, error (its type's name),
        interactive and token (a SHA-256 of the access token, never the token)."""
        (line,) = self.expect_lines("RESULTS ", 1, timeout=timeout)
        parsed: dict[str, dict[str, Any]] = json.loads(line.removeprefix("RESULTS "))
        return parsed

    def close(self) -> None:
        """Kill the parent if it still runs, reap it, join the readers."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self._err_reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def start_parent(
    tmp_path: Path,
    config: object,
    *,
    mode: str,
    browser: str,
    start_method: str | None = None,
    interactive: bool | None = None,
    log: Path | None = None,
    gate: Path | None = None,
    ports: Iterable[int] = (),
    new_session: bool = False,
) -> ParentProcess:
    """:data:`PARENT_SCRIPT` (written to ``tmp_path / "parent.py"``) in a subprocess, with
    its store in ``tmp_path / "tokens"`` and its registry in ``tmp_path / "leases"``: two
    parents started with one ``tmp_path`` share them. ``new_session``: in a process group
    of its own, as a terminal's foreground job."""
    script = tmp_path / "parent.py"
    if not script.exists():
        script.write_text(PARENT_SCRIPT)
    options = {
        "config": config,
        "tokens": str(tmp_path / "tokens"),
        "leases": str(tmp_path / "leases"),
        "mode": mode,
        "browser": browser,
        "start_method": start_method,
        "interactive": interactive,
        "log": None if log is None else str(log),
        "gate": None if gate is None else str(gate),
        "ports": list(ports),
    }
    return ParentProcess(script, [json.dumps(options)], new_session=new_session)


def released_together(
    script: str,
    args: Sequence[str],
    count: int,
    *,
    before_release: Callable[[], None] | None = None,
    timeout: float = 60,
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``count`` processes of the Python source ``script`` so that they really go at once.

    Each is ``python -c script *args FD``; it prints ``ready`` when it is, then waits for the
    end of file on the descriptor ``FD`` (``os.read(FD, 1) == b""``). Once all are ready
    (and ``before_release``, if given, has run), the pipe's write end is closed: all go
    together. Returns each one's output and exit code, in order. Blocking: run it in a
    thread.
    """
    read_end, write_end = os.pipe()
    processes: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", script, *args, str(read_end)],
                    pass_fds=(read_end,),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for process in processes:
            stdout = process.stdout
            assert stdout is not None
            assert bounded(stdout.readline, timeout) == "ready\n"
        if before_release is not None:
            before_release()
        os.close(write_end)  # the barrier: all go at once
        write_end = -1
        outputs = [process.communicate(timeout=timeout) for process in processes]
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return [
        subprocess.CompletedProcess(process.args, process.returncode, out, err)
        for process, (out, err) in zip(processes, outputs, strict=True)
    ]
