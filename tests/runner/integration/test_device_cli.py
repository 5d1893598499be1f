"""``mcp-oauth authorize --flow device`` against a hermes home pointing at sandbox servers
with the device grant: a real subprocess, no browser (``$BROWSER`` records any call, and
none may come); the test reads each user code off the command's output, as a person would,
and enters it at the sandbox."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from runner.sandbox import Sandbox, list_tools_with_token

pytestmark = pytest.mark.anyio

_CODE = re.compile(r"open (\S+) on any device and enter the code (\S+)")


def environment(tmp_path: Path) -> tuple[dict[str, str], Path]:
    calls = tmp_path / "browser-calls"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {calls}\n')
    browser.chmod(0o755)
    env = dict(os.environ, PORTLEASE_DIR=str(tmp_path / "leases"), BROWSER=str(browser))
    env.pop("HERMES_HOME", None)
    return env, calls


class Reader:
    """Reads the command's output line by line (bounded), approving each code it shows."""

    def __init__(self, process: subprocess.Popen[str], sandbox: Sandbox) -> None:
        self.lines: list[str] = []
        self.approved: dict[str, bool] = {}
        self._process = process
        self._sandbox = sandbox
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for _ in range(10_000):  # bounded: far more lines than a run prints
            line = self._process.stdout.readline()
            if not line:
                return
            self.lines.append(line)
            found = _CODE.search(line)
            if found and found.group(2) not in self.approved:
                self.approved[found.group(2)] = self._sandbox.approve_device(found.group(2))


def run_cli(
    sb: Sandbox, tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[int, str, str, dict[str, bool]]:
    """``python -m runner ARGS``: its exit code, output, errors and the codes the
    simulated person approved (bounded: 90 s)."""
    with (
        (tmp_path / "stderr").open("w") as err,
        subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        ) as process,
    ):
        reader = Reader(process, sb)
        try:
            process.wait(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        reader.thread.join(timeout=10)
    output = "".join(reader.lines)
    return process.returncode, output, (tmp_path / "stderr").read_text(), reader.approved


@pytest.mark.timeout(120)
def test_authorize_flow_device_logs_in_without_a_browser(tmp_path: Path) -> None:
    home = tmp_path / "hermes"
    home.mkdir()
    env, calls = environment(tmp_path)
    with Sandbox(servers=2, device=True) as sb:
        urls = {s.name: s.url for s in sb.servers}
        (home / "config.yaml").write_text(
            f"""\
mcp_servers:
  first:
    url: {urls["sandbox-1"]}
    auth: oauth
  second:
    url: {urls["sandbox-2"]}
    auth: oauth
    oauth:
      flow: browser
"""
        )
        code, output, stderr, approved = run_cli(
            sb,
            tmp_path,
            env,
            "authorize",
            "--hermes-home",
            str(home),
            "--flow",
            "device",
            "--timeout",
            "60",
        )
        assert code == 0, output + stderr
        assert len(approved) == 2 and all(approved.values()), output
        assert not calls.exists(), "a device login opened a browser"
        # The table says how each server logged in.
        assert re.search(r"first\s+ok\s+device", output), output
        assert re.search(r"second\s+ok\s+device", output), output
        for name, server in (("first", "sandbox-1"), ("second", "sandbox-2")):
            stored = json.loads((home / "mcp-tokens" / f"{name}.json").read_text())
            assert stored["access_token"] in sb.issued_tokens(server)
            assert stored["hermes_issuer"] == sb.server(server).issuer
            assert anyio.run(list_tools_with_token, urls[server], stored["access_token"])


@pytest.mark.timeout(120)
def test_oauth_flow_device_in_the_config_is_a_device_login(tmp_path: Path) -> None:
    home = tmp_path / "hermes"
    home.mkdir()
    env, calls = environment(tmp_path)
    with Sandbox(servers=1, device=True) as sb:
        (home / "config.yaml").write_text(
            f"""\
mcp_servers:
  only:
    url: {sb.servers[0].url}
    auth: oauth
    oauth:
      flow: device
"""
        )
        code, output, stderr, approved = run_cli(
            sb, tmp_path, env, "authorize", "--hermes-home", str(home)
        )
        assert code == 0, output + stderr
        assert list(approved.values()) == [True], output
        assert not calls.exists()
        assert "note: oauth.flow" not in output


@pytest.mark.timeout(120)
def test_login_flow_device_logs_in_every_server_of_a_json_file(tmp_path: Path) -> None:
    env, calls = environment(tmp_path)
    with Sandbox(servers=2, device=True) as sb:
        config = tmp_path / "servers.json"
        config.write_text(json.dumps({s.name: {"url": s.url} for s in sb.servers}))
        store = tmp_path / "store"
        code, output, stderr, approved = run_cli(
            sb, tmp_path, env, "login", str(config), "--flow", "device", "--store", str(store)
        )
        assert code == 0, output + stderr
        assert len(approved) == 2 and all(approved.values()), output
        assert not calls.exists()
        for server in sb.servers:
            stored = json.loads((store / f"{server.name}.json").read_text())
            assert stored["tokens"]["access_token"] in sb.issued_tokens(server.name)
