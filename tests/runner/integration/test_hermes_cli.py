"""``python -m runner authorize|status|logout`` against a hermes home made the way hermes makes
it: a login done through the SDK in-process, its files written as hermes's
``HermesTokenStorage`` writes them; real subprocesses, a real pseudo-terminal, sandbox servers."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mcp.shared.auth import OAuthMetadata

from runner.hermes_config import hermes_safe_name
from runner.sandbox import Sandbox, whoami_with_token

from support.hermes import hermes_login, hermes_reads
from support.sdk_client import as_metadata

pytestmark = pytest.mark.anyio


def run(*args: str, env: dict[str, str], timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def config_yaml(sb: Sandbox) -> str:
    urls = {s.name: s.url for s in sb.servers}
    return f"""\
model: some/model
mcp_servers:
  filesystem:
    command: npx
    args: ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
  plain:
    url: {urls["sandbox-1"]}
    headers:
      Authorization: Bearer not-a-secret
  disabled:
    url: {urls["sandbox-1"]}
    auth: oauth
    enabled: false
  existing:
    url: {urls["sandbox-1"]}
    auth: oauth
    timeout: 120
    tools:
      include: [whoami]
  notes.app:
    url: {urls["sandbox-2"]}
    auth: oauth
    connect_timeout: 30
    oauth:
      client_name: hermes-test
  third:
    url: {urls["sandbox-3"]}
    auth: oauth
"""


def recording_browser(tmp_path: Path) -> tuple[Path, Path]:
    """``$BROWSER``: records each URL, then follows the sandbox's automatic consent."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    calls = tmp_path / "browser-calls"
    script = tmp_path / "browser.sh"
    script.write_text(
        f'#!/bin/sh\necho "$1" >> {calls}\nexec {curl} -s -o /dev/null -L --max-time 30 "$1"\n'
    )
    script.chmod(0o755)
    return script, calls


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PORTLEASE_DIR=str(tmp_path / "leases"), **extra)
    env.pop("HERMES_HOME", None)
    return env


@pytest.mark.timeout(240)
async def test_status_authorize_logout_on_a_hermes_home(tmp_path: Path) -> None:
    home = tmp_path / "hermes"
    tokens_dir = home / "mcp-tokens"
    browser, calls = recording_browser(tmp_path)
    env = environment(tmp_path, BROWSER=str(browser))
    with Sandbox(servers=3, access_token_ttl=3600) as sb:
        await hermes_login(sb, "sandbox-1", tokens_dir, "existing")
        home.mkdir(exist_ok=True)
        (home / "config.yaml").write_text(config_yaml(sb))
        existing = {p.name: p.read_bytes() for p in tokens_dir.iterdir()}
        grants_before = dict(sb.grant_counts("sandbox-1"))

        # status: the OAuth servers, the rest skipped.
        status = run("status", "--hermes-home", str(home), "--json", env=env)
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        states = {s["name"]: s for s in document["servers"]}
        assert list(states) == ["existing", "notes.app", "third"]
        assert states["existing"]["logged_in"] is True
        assert states["existing"]["scopes"] == ["mcp"]
        assert isinstance(states["existing"]["redirect_port"], int)
        assert states["notes.app"]["state"] == "not logged in"
        assert {s["name"] for s in document["skipped"]} == {"filesystem", "plain", "disabled"}
        text = run("status", "--hermes-home", str(home), env=env)
        assert text.returncode == 0, text.stderr
        assert "skipped" in text.stdout and "stdio" in text.stdout
        assert "logged in" in text.stdout

        # authorize: the hermes login reused untouched, the others through the browser.
        done = run("authorize", "--hermes-home", str(home), "--timeout", "60", env=env)
        out = done.stdout
        assert done.returncode == 0, out + done.stderr
        assert "Traceback" not in done.stderr
        assert "reusing its stored login" in out
        assert out.count("waiting for the browser") == 2
        assert out.count("exchanging the code for tokens") == 2
        assert "filesystem" in out and "skipped: stdio server" in out
        assert "2/2" not in out and "3/3 OAuth servers logged in, 3 skipped" in out
        table = out[out.index("SERVER") :]
        assert "existing" in table and "stored login" in table
        assert calls.read_text().count("\n") == 2  # two browser logins, none for "existing"
        assert {p.name: p.read_bytes() for p in tokens_dir.iterdir() if p.name in existing} == (
            existing
        )
        assert dict(sb.grant_counts("sandbox-1")) == grants_before  # not even refreshed

        # hermes-format files, which hermes would load, and tokens that work.
        for name, server in (("notes.app", "sandbox-2"), ("third", "sandbox-3")):
            stem = hermes_safe_name(name)
            for suffix in (".json", ".client.json", ".meta.json"):
                path = tokens_dir / f"{stem}{suffix}"
                assert path.stat().st_mode & 0o777 == 0o600, path
            raw = json.loads((tokens_dir / f"{stem}.json").read_text())
            assert "server_url" not in raw and "version" not in raw
            assert abs(raw["expires_at"] - (time.time() + 3600)) < 120
            token, issuer = hermes_reads(tokens_dir, name)
            assert issuer == str(
                OAuthMetadata.model_validate(as_metadata(sb.server(server))).issuer
            )
            assert token.access_token in sb.issued_tokens(server)
            assert token.refresh_token
            assert await whoami_with_token(sb.server(server).url, token.access_token)
        assert (tokens_dir / "notes_app.json").exists()  # hermes's name rule

        # again, as JSON: everything reused, no browser.
        again = run("authorize", "--hermes-home", str(home), "--json", env=env)
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout)
        assert result["ok"] is True
        assert {s["name"]: s["how"] for s in result["servers"]} == dict.fromkeys(
            ["existing", "notes.app", "third"], "stored login"
        )
        assert calls.read_text().count("\n") == 2

        # logout one.
        gone = run("logout", "notes.app", "--hermes-home", str(home), env=env)
        assert gone.returncode == 0, gone.stderr
        assert "notes.app: logged out" in gone.stdout
        assert not any(
            p.name.startswith("notes_app.") and "lock" not in p.name for p in tokens_dir.iterdir()
        )
        after = json.loads(run("status", "--hermes-home", str(home), "--json", env=env).stdout)
        assert {s["name"]: s["logged_in"] for s in after["servers"]} == {
            "existing": True,
            "notes.app": False,
            "third": True,
        }


@pytest.mark.timeout(120)
def test_a_failed_login_is_exit_1_with_the_reason_in_the_table(tmp_path: Path) -> None:
    browser, _ = recording_browser(tmp_path)
    env = environment(tmp_path, BROWSER=str(browser))
    with Sandbox(servers=1, overrides={"sandbox-1": {"consent": "deny"}}) as sb:
        home = tmp_path / "hermes"
        home.mkdir()
        (home / "config.yaml").write_text(
            f"mcp_servers:\n  denied:\n    url: {sb.servers[0].url}\n    auth: oauth\n"
        )
        done = run("authorize", "--hermes-home", str(home), "--timeout", "40", env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "FAILED" in done.stdout and "AuthorizationDenied" in done.stdout
        assert "Traceback" not in done.stderr


def read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r}; got:\n{seen.decode(errors='replace')}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other end closed (EIO)
                chunk = b""
            assert chunk, f"closed before {needle!r}; got:\n{seen.decode(errors='replace')}"
            seen += chunk


@pytest.mark.timeout(120)
def test_pasting_in_a_terminal_retries_until_the_right_url(tmp_path: Path) -> None:
    env = environment(tmp_path)
    with Sandbox(servers=1) as sb:
        home = tmp_path / "hermes"
        home.mkdir()
        (home / "config.yaml").write_text(
            f"mcp_servers:\n  pasted:\n    url: {sb.servers[0].url}\n    auth: oauth\n"
        )
        master, slave = pty.openpty()
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner",
                "authorize",
                "--hermes-home",
                str(home),
                "--no-browser",
                "--timeout",
                "60",
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        seen = bytearray()
        try:
            read_until(master, b"open this URL to log in: ", seen)
            read_until(master, b"\n", seen)
            line = seen[seen.index(b"open this URL to log in: ") :].split(b"\n")[0]
            url = line.split(b": ", 1)[1].strip().decode()
            read_until(master, b"paste the address", seen)
            os.write(master, b"this is not a URL\n")
            read_until(master, b"paste again", seen)
            landed = httpx.get(url, follow_redirects=False, timeout=10, trust_env=False)
            assert landed.status_code in (302, 303, 307)
            os.write(master, landed.headers["location"].encode() + b"\n")
            read_until(master, b"OAuth servers logged in", seen)
            assert child.wait(timeout=30) == 0, seen.decode(errors="replace")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
            os.close(master)
        text = seen.decode(errors="replace")
        assert text.count("paste the address") == 1  # the prompt, once
        assert "exchanging the code for tokens" in text
        assert "pasted" in text[text.index("SERVER") :]
        assert (home / "mcp-tokens" / "pasted.json").exists()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("mcp_servers:\n  a:\n    auth: oauth\n", "no 'url'"),
        (
            "mcp_servers:\n  a:\n    url: http://127.0.0.1:1/mcp\n    auth: oauth\n"
            "    oauth:\n      redirect_port: 99999\n",
            "oauth.redirect_port",
        ),
        (
            "mcp_servers:\n  a:\n    url: http://127.0.0.1:1/mcp\n    auth: oauth\n"
            "    oauth:\n      redirect_prot: 1\n",
            "unknown oauth key 'redirect_prot'",
        ),
        (None, "no such file"),
        ("mcp_servers:\n  a: [\n", "YAML syntax error at line"),
    ],
)
@pytest.mark.parametrize("command", ["authorize", "status"])
def test_config_errors_are_one_line_and_exit_2(
    tmp_path: Path, config: str | None, words: str, command: str
) -> None:
    home = tmp_path / "hermes"
    home.mkdir()
    if config is not None:
        (home / "config.yaml").write_text(config)
    done = run(command, "--hermes-home", str(home), env=environment(tmp_path), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert str(home / "config.yaml") in lines[0]


def test_json_config_and_an_unknown_server_name(tmp_path: Path) -> None:
    config = tmp_path / "servers.json"
    config.write_text(
        json.dumps({"mcp_servers": {"a": {"url": "http://127.0.0.1:1/mcp", "auth": "oauth"}}})
    )
    env = environment(tmp_path)
    done = run("status", str(config), "--store", str(tmp_path / "t"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert [s["name"] for s in json.loads(done.stdout)["servers"]] == ["a"]
    missing = run(
        "authorize", str(config), "--server", "b", "--hermes-home", str(tmp_path), env=env
    )
    assert missing.returncode == 2
    assert "no OAuth server 'b'" in missing.stderr and "Traceback" not in missing.stderr
