"""Logging in over SSH with no display: the ``ssh -L`` line for the leased port comes before the
URL, and no browser is opened (``login`` and ``authorize``'s live view); ``login --no-browser``.
Real sandbox servers and the real command line; the test plays the person's browser."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner._cli._authorize import Live
from runner._core._spec import ServerSpec
from runner.sandbox import Sandbox

SSH = {"SSH_CONNECTION": "198.51.100.7 50022 203.0.113.5 22", "USER": "alice"}
URL_LINE = re.compile(r"open this URL to log in: (\S+)")


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SSH_CONNECTION", "SSH_CLIENT")
    }
    marker = tmp_path / "browser-was-opened"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {marker}\n')
    browser.chmod(0o755)
    return {**env, "BROWSER": str(browser), "PORTLEASE_DIR": str(tmp_path / "leases"), **extra}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flags", [["--no-browser"], []], ids=["no-browser", "ssh-only"])
def test_login_over_ssh_prints_the_tunnel_and_opens_no_browser(
    tmp_path: Path, flags: list[str]
) -> None:
    """Before: ``login`` had no ``--no-browser``, printed no ``ssh -L`` line and tried the
    system browser over SSH."""
    with Sandbox(servers=2) as sandbox:
        config = tmp_path / "servers.json"
        config.write_text(json.dumps(sandbox.config()))
        env = _environment(tmp_path, **SSH)
        with subprocess.Popen(
            [sys.executable, "-m", "runner", "login", str(config), "--store",
             str(tmp_path / "tokens"), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=env,
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            seen: list[str] = []
            visited = 0
            for line in proc.stdout:  # bounded: the child ends with its logins (timeout mark)
                seen.append(line)
                match = URL_LINE.search(line)
                if match is None:
                    continue
                url = match.group(1)
                port = re.search(r"redirect_uri=http%3A%2F%2F127\.0\.0\.1%3A(\d+)", url)
                assert port is not None, url
                tunnel = f"ssh -L {port[1]}:127.0.0.1:{port[1]} alice@203.0.113.5"
                assert any(tunnel in earlier for earlier in seen[:-1]), "".join(seen)
                sandbox.browser(url)  # the person's browser, through the tunnel
                visited += 1
            code = proc.wait(timeout=60)
        output = "".join(seen)
        assert code == 0, output
        assert visited == 2
        assert not (tmp_path / "browser-was-opened").exists()
        assert sorted(p.name for p in (tmp_path / "tokens").glob("*.json")) == [
            "sandbox-1.json",
            "sandbox-2.json",
        ]


def test_the_live_view_prints_the_tunnel_before_the_url_and_opens_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``authorize``'s live view (``Live.browser``), over SSH with no display and locally."""
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    url = "https://as.example/authorize?redirect_uri=http%3A%2F%2F127.0.0.1%3A41234%2Fcb"
    spec = ServerSpec(name="linear", url="https://mcp.example/mcp")
    out = io.StringIO()
    Live(out=out, prompt=False).browser(open_it=True, env=SSH)(url, spec)
    text = out.getvalue()
    assert "ssh -L 41234:127.0.0.1:41234 alice@203.0.113.5" in text
    assert text.index("ssh -L") < text.index("open this URL to log in")
    assert opened == []
    local = io.StringIO()
    Live(out=local, prompt=False).browser(open_it=True, env={"DISPLAY": ":0"})(url, spec)
    assert "ssh" not in local.getvalue()
    assert opened == [url]
