"""A real browser end to end: ``browser=None`` opens the system browser through Python's
``webbrowser`` module, which runs ``$BROWSER``: here a wrapper around headless Chromium that
loads the authorization URL, follows the sandbox's redirect to the login's callback listener
itself (asking for ``/favicon.ico`` on the way), dumps the page and exits."""

from __future__ import annotations

import os
import shutil
import stat
import textwrap
import time
import webbrowser
from pathlib import Path

import anyio
import anyio.to_thread
import psutil
import pytest

from portlease import Registry
from runner import TokenStore, authorize_many
from runner.sandbox import Sandbox, list_tools_with_token

from support.flows import ProgressLog, child_processes, kill_all, still_running
from support.waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

CHROMIUM = "chromium"


def find_chromium() -> str:
    path = shutil.which(CHROMIUM)
    if path is None:
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_wrapper(tmp_path: Path, chromium: str) -> Path:
    """``$BROWSER``: one headless Chromium per URL, its own profile, its output in a log."""
    logs = tmp_path / "browser-logs"
    logs.mkdir()
    wrapper = tmp_path / "browser_wrapper.sh"
    wrapper.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            # Usage: browser_wrapper.sh URL  (as Python's webbrowser runs $BROWSER)
            profile=$(mktemp -d "{tmp_path}/chromium-profile.XXXXXX")
            log=$(mktemp "{logs}/dom.XXXXXX")
            timeout 60 "{chromium}" --headless --no-sandbox --disable-gpu --no-first-run \\
                --disable-background-networking --disable-component-update --disable-sync \\
                --disable-quic --user-data-dir="$profile" --dump-dom "$1" \\
                >"$log" 2>"$log.stderr"
            status=$?
            rm -rf "$profile"
            exit $status
            """
        )
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def browsers_started_under(directory: Path) -> list[psutil.Process]:
    """Processes (Chromium and its helpers) whose command line names ``directory``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if any(str(directory) in part for part in cmdline):
            found.append(proc)
    return found


@pytest.mark.timeout(120)
async def test_real_headless_browser_completes_both_logins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chromium = find_chromium()
    wrapper = write_wrapper(tmp_path, chromium)

    # webbrowser reads $BROWSER once, when it first builds its registry: start a fresh one.
    monkeypatch.setenv("BROWSER", str(wrapper))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(webbrowser, "_browsers", {})
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_os_preferred_browser", None)
    webbrowser.register_standard_browsers()
    assert webbrowser._tryorder is not None
    assert webbrowser._tryorder[0] == str(wrapper), webbrowser._tryorder
    # Nothing to fall back to (a console browser would take over the terminal).
    monkeypatch.setattr(webbrowser, "_tryorder", [str(wrapper)])
    assert isinstance(webbrowser.get(), webbrowser.GenericBrowser)

    before = child_processes()
    with Sandbox(servers=2) as sb:
        progress = ProgressLog()
        started = time.monotonic()
        try:
            results = await authorize_many(
                sb.config(),
                store=TokenStore(tmp_path / "tokens"),
                registry=Registry(tmp_path / "leases"),
                timeout=90,
                browser=None,  # the system browser: webbrowser.open -> $BROWSER
                pastes=None,
                progress=progress,
            )
            elapsed = time.monotonic() - started
            # The runner's processes (children, zygote) are gone on return; the browsers
            # (the wrapper, Chromium, ...) are not the runner's: they may still be
            # finishing their page. Their command lines all name tmp_path.
            # A process whose command line is already gone is exiting: the runner waits
            # for its own processes to be reaped before returning, so that one is a browser
            # wrapper's, reaped by webbrowser's thread.
            left_behind = [
                p for p in still_running(before) if str(tmp_path) not in p and not p.endswith(": ")
            ]
            browsers_exited = await anyio.to_thread.run_sync(
                wait_until, lambda: not browsers_started_under(tmp_path), 40.0
            )
        finally:
            kill_all(child_processes() - before)
            for proc in browsers_started_under(tmp_path):
                proc.kill()
        assert browsers_exited, "the browsers did not exit after loading their page"

        logs = sorted((tmp_path / "browser-logs").glob("dom.*"))
        dumps = [p.read_text(errors="replace") for p in logs if p.suffix != ".stderr"]
        stderr_tail = "\n".join(
            p.read_text(errors="replace")[-1500:] for p in logs if p.suffix == ".stderr"
        )
        for name, result in results.items():
            assert result.ok, (name, result.error, progress.dump(), stderr_tail)
            assert result.interactive
            assert result.tokens is not None
            assert await list_tools_with_token(sb.server(name).url, result.tokens.access_token)
            assert "callback received (http); getting tokens" in progress.messages(name)
        assert sb.browser_calls == 0  # the real browser did it, not the sandbox's
        # Each Chromium landed on a callback page that said so.
        assert len(dumps) == 2, (dumps, stderr_tail)
        for dump in dumps:
            assert "Login complete" in dump, (dump[:2000], stderr_tail)
        assert elapsed < 90, elapsed
    assert Registry(tmp_path / "leases").list(stale=True) == []
    assert left_behind == [], left_behind
