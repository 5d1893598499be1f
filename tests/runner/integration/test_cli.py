"""python -m runner: the demo and login commands, run as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.sandbox import Sandbox


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.timeout(150)
def test_demo_logs_in_and_proves_every_token(tmp_path: Path) -> None:
    env = dict(os.environ, PORTLEASE_DIR=str(tmp_path / "leases"))
    done = run("demo", "--servers", "3", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3/3 logins completed and proven with list_tools" in done.stdout
    assert done.stdout.count("ok (whoami)") == 3


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must hold an object"),
        (
            '{"a": {"url": "http://127.0.0.1:1/mcp", "oauth": {"redirect_prot": 1}}}',
            "redirect_prot",
        ),
        (
            '{"a": {"url": "http://127.0.0.1:1/mcp", "oauth": {"redirect_host": "x.invalid"}}}',
            "loopback",
        ),
    ],
)
def test_login_reports_a_bad_config_without_a_traceback(
    tmp_path: Path, content: str, words: str
) -> None:
    config = tmp_path / "servers.json"
    config.write_text(content)
    done = run("login", str(config), "--store", str(tmp_path / "tokens"))
    assert done.returncode == 2  # a bad configuration, as the command line's exit codes say
    assert words in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_login_with_a_missing_file(tmp_path: Path) -> None:
    done = run("login", str(tmp_path / "nope.json"))
    assert done.returncode == 2
    assert "no such file" in done.stderr and "Errno" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(150)
def test_login_through_the_system_browser(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    # A "browser" that follows the sandbox's automatic consent to the callback.
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nexec {curl} -s -o /dev/null -L --max-time 30 "$1"\n')
    browser.chmod(0o755)
    with Sandbox(servers=2) as sandbox:
        config = tmp_path / "hermes.json"
        config.write_text(json.dumps({"mcp_servers": sandbox.config()}))
        env = dict(
            os.environ,
            BROWSER=str(browser),
            PORTLEASE_DIR=str(tmp_path / "leases"),
            DISPLAY="",
            WAYLAND_DISPLAY="",
        )
        done = run("login", str(config), "--store", str(tmp_path / "tokens"), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(p.name for p in (tmp_path / "tokens").glob("*.json")) == [
            "sandbox-1.json",
            "sandbox-2.json",
        ]
        again = run("login", str(config), "--store", str(tmp_path / "tokens"), env=env)
        assert again.returncode == 0
        assert "Log in to" not in again.stderr  # stored tokens: nobody was asked
