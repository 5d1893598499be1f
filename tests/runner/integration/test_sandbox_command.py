"""``python -m runner sandbox --hermes-home DIR``: serves sandbox servers in the foreground and a
hermes home naming them; ``status`` and ``authorize`` work against it with no account and no
network (a curl "browser" plays the person, the sandbox's consent is automatic); Ctrl-C stops
it and removes the config it wrote. A real hermes config is never overwritten."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runner._cli._sandbox import MARK


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return {**env, "PORTLEASE_DIR": str(tmp_path / "leases"), **extra}


def _runner(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip


@pytest.mark.timeout(150)
def test_status_and_authorize_against_the_sandbox_command(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nexec {curl} -s -o /dev/null -L --max-time 30 "$1"\n')
    browser.chmod(0o755)
    home = tmp_path / "hermes"
    env = _env(tmp_path, BROWSER=str(browser))
    with subprocess.Popen(
        [sys.executable, "-m", "runner", "sandbox", "--hermes-home", str(home), "--servers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        try:
            lines = [proc.stdout.readline() for _ in range(5)]  # its banner, once serving
            assert lines[0].startswith("sandbox: 2 server(s)"), [*lines, proc.stderr.read()]
            assert (home / "config.yaml").read_text().startswith(MARK)
            assert (home / "config.yaml").stat().st_mode & 0o077 == 0

            before = _runner("status", "--hermes-home", str(home), env=env)
            assert before.returncode == 0, before.stdout + before.stderr
            assert "sandbox-1" in before.stdout and "sandbox-2" in before.stdout

            done = _runner("authorize", "--hermes-home", str(home), env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "2/2 OAuth servers logged in" in done.stdout

            after = _runner("status", "--hermes-home", str(home), "--json", env=env)
            assert after.returncode == 0, after.stdout + after.stderr
            assert after.stdout.count('"logged_in": true') == 2, after.stdout
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
        assert code == 0, proc.stderr.read()
        assert "stopped (SIGINT)" in proc.stderr.read()
    assert not (home / "config.yaml").exists()
    assert sorted(p.name for p in (home / "mcp-tokens").glob("*.json"))


def test_a_real_hermes_config_is_never_overwritten(tmp_path: Path) -> None:
    home = tmp_path / "hermes"
    home.mkdir()
    (home / "config.yaml").write_text("mcp_servers: {}\n")
    done = _runner("sandbox", "--hermes-home", str(home), env=_env(tmp_path))
    assert done.returncode == 2
    assert "not overwriting" in done.stderr
    assert (home / "config.yaml").read_text() == "mcp_servers: {}\n"
