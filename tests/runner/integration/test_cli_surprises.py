"""The command line never surprises: a bad config is one line and exit 2, never a traceback;
config-derived text reaches the terminal escaped; stored expiries format; a symlinked config
is read; ``login`` takes a hermes config; an unreachable server says so; ``--help`` is plain
and cheap. Real files and real subprocesses (``python -m runner``); loopback only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from runner import TokenStore
from runner._core._stored import StoredLogin
from runner.hermes_config import MAX_CONFIG_BYTES, HermesConfigError, read_hermes_config
from runner.sandbox import Sandbox

from support.ports import free_ports

ROOT = Path(__file__).resolve().parents[3]


def run(
    *args: str, env: dict[str, str], timeout: float = 120, program: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(program or [sys.executable, "-m", "runner"]), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="surrogateescape",
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    # Strict UTF-8 on the child's stdout (as on a UTF-8 terminal): a lone surrogate that
    # reached print() unescaped would be a UnicodeEncodeError there.
    env = dict(os.environ, PORTLEASE_DIR=str(tmp_path / "leases"), PYTHONIOENCODING="utf-8")
    env.pop("HERMES_HOME", None)
    env.update(extra)
    return env


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def oauth_server(port_value: str) -> str:
    return f"""\
mcp_servers:
  s:
    url: https://mcp.example.com/mcp
    auth: oauth
    oauth:
      redirect_port: {port_value}
"""


# --- item 1 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "!!int ''",
        "!!float ''",
        "!!timestamp 'x'",
        "!!bool 'maybe'",
        "1" + ":59" * 200 + ".5",  # a sexagesimal float beyond a float's range
        "'²'",  # str.isdigit() is true; int() refuses it
    ],
)
@pytest.mark.parametrize("command", ["status", "authorize"])
def test_a_config_value_yaml_or_int_refuses_is_one_line_and_exit_2(
    tmp_path: Path, value: str, command: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(oauth_server(value))
    done = run(command, str(config), "--store", str(tmp_path / "tokens"), env=environment(tmp_path))
    line = one_error_line(done)
    assert str(config) in line and "'s'" in line and "oauth.redirect_port" in line


HOSTILE_NAMES = {
    "evil\x1b]0;pwned\x07": "\\x1b]0;pwned\\x07",
    "clear\x1b[2J\x1b[H": "\\x1b[2J\\x1b[H",
    "half\udc80surrogate": "half\\udc80surrogate",
}


def hostile_config(suffix: str) -> str:
    servers: dict[str, object] = {
        name: {"url": "https://mcp.example.com/mcp", "auth": "oauth"} for name in HOSTILE_NAMES
    }
    servers["stdio\x1b[31m"] = {"command": "npx"}
    if suffix == ".yaml":  # libyaml refuses a lone surrogate in YAML: JSON carries that one
        servers = {n: e for n, e in servers.items() if "\udc80" not in n}
    return json.dumps({"mcp_servers": servers})  # JSON is YAML too


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("command", [["status"], ["authorize", "--no-browser"]])
def test_hostile_server_names_reach_the_terminal_escaped(
    tmp_path: Path, command: list[str], suffix: str
) -> None:
    # Items 1 (a lone surrogate in a skipped server's name crashed the command) and 4
    # (escape sequences reached the terminal raw).
    config = tmp_path / f"config{suffix}"
    config.write_text(hostile_config(suffix))
    done = run(*command, str(config), "--store", str(tmp_path / "t"), env=environment(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    assert "\x1b" not in output and "\x07" not in output and "\udc80" not in output
    for name, escaped in HOSTILE_NAMES.items():
        assert escaped in output or (suffix == ".yaml" and "\udc80" in name)
    assert "stdio\\x1b[31m" in output


def test_an_error_line_is_escaped_too(tmp_path: Path) -> None:
    missing = tmp_path / "no\x1b[2Jsuch.yaml"
    line = one_error_line(
        run("status", str(missing), "--store", str(tmp_path / "t"), env=environment(tmp_path))
    )
    assert "\x1b" not in line and "\\x1b[2J" in line


# --- item 2 ------------------------------------------------------------------------------


def test_status_formats_expiries_past_year_9999(tmp_path: Path) -> None:
    home = tmp_path / "hermes"
    tokens = home / "mcp-tokens"
    tokens.mkdir(parents=True, mode=0o700)
    (home / "config.yaml").write_text(
        "mcp_servers:\n"
        + "".join(
            f"  {n}:\n    url: https://{n}.example.com/mcp\n    auth: oauth\n"
            for n in ("hermes-at", "hermes-in")
        )
    )
    (tokens / "hermes-at.json").write_text(
        json.dumps({"access_token": "a", "token_type": "Bearer", "expires_at": 1e308})
    )
    # An older hermes file: expires_in from its mtime, a token endpoint's 10**12.
    (tokens / "hermes-in.json").write_text(
        json.dumps({"access_token": "a", "token_type": "Bearer", "expires_in": 10**12})
    )
    env = environment(tmp_path, HERMES_HOME=str(home))
    for args in (["status"], ["status", "--json"]):
        done = run(*args, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
    document = json.loads(run("status", "--json", env=env).stdout)
    assert {s["name"]: s["logged_in"] for s in document["servers"]} == {
        "hermes-at": True,
        "hermes-in": True,
    }


def test_status_formats_an_expiry_a_token_endpoint_made_absurd(tmp_path: Path) -> None:
    # expires_in: 10**12 from a token endpoint, saved through the store as a login is.
    store = TokenStore(tmp_path / "tokens")
    from mcp.shared.auth import OAuthToken

    token = OAuthToken(access_token="a", token_type="Bearer", expires_in=10**12)
    store.save(
        "far",
        StoredLogin(
            server_url="https://far.example.com/mcp",
            tokens=token,
            expires_at=time.time() + 10**12,
            client_info=None,
            oauth_metadata=None,
        ),
    )
    raw = json.loads((tmp_path / "tokens" / "far.json").read_text())
    raw["expires_at"] = 1e308  # and a file written by anything else
    (tmp_path / "tokens" / "far.json").write_text(json.dumps(raw))
    config = tmp_path / "config.yaml"
    config.write_text(
        "mcp_servers:\n  far:\n    url: https://far.example.com/mcp\n    auth: oauth\n"
    )
    done = run(
        "status", str(config), "--store", str(tmp_path / "tokens"), env=environment(tmp_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "logged in" in done.stdout


# --- item 3 ------------------------------------------------------------------------------


def test_the_config_cap_is_far_below_what_yaml_decoding_can_afford() -> None:
    assert MAX_CONFIG_BYTES <= 256 << 10


def worst_cases(cap: int) -> dict[str, str]:
    room = cap - 16
    return {
        "sexagesimal int": "a: 1" + ":59" * (room // 3) + "\n",
        "sexagesimal ints": "a: [" + "1:59:59:59:59:59," * (room // 17) + "1]\n",
        "sexagesimal float": "a: 1" + ":59" * (room // 3 - 1) + ".5\n",
        "flow list": "a: [" + "1," * (room // 2) + "1]\n",
        "block list": "a:\n" + "- 1\n" * (room // 4),
        "flow mapping": "a: {" + ",".join(f"k{i}: 1" for i in range(room // 12)) + "}\n",
        "empty lists": "a: [" + "[]," * (room // 3) + "[]]\n",
        "aliases": "a: &x [1, 2]\nb: [" + "*x," * (room // 3 - 8) + "*x]\n",
        "nesting": "a: " + "[" * (room // 2) + "]" * (room // 2) + "\n",
        "long hex int": "a: 0x" + "f" * room + "\n",
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(worst_cases(1024)))
def test_a_config_at_the_cap_decodes_fast_whatever_it_holds(tmp_path: Path, case: str) -> None:
    text = worst_cases(MAX_CONFIG_BYTES)[case]
    assert len(text.encode()) <= MAX_CONFIG_BYTES
    path = tmp_path / "config.yaml"
    path.write_text(text)
    started = time.monotonic()
    problem = ""
    try:
        config = read_hermes_config(path)
    except HermesConfigError as exc:
        problem = str(exc)
    else:
        assert config.specs == []
    assert "\n" not in problem
    # Generous: the point is seconds, not the minutes of before (a 2-core machine, shared).
    assert time.monotonic() - started < 30


# --- item 5 ------------------------------------------------------------------------------


def test_a_symlinked_config_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "hermes-config.yaml"
    real.parent.mkdir()
    real.write_text("mcp_servers:\n  s:\n    url: https://mcp.example.com/mcp\n    auth: oauth\n")
    home = tmp_path / "hermes"
    home.mkdir()
    (home / "config.yaml").symlink_to(real)
    done = run("status", "--json", env=environment(tmp_path, HERMES_HOME=str(home)))
    assert done.returncode == 0, done.stderr
    assert [s["name"] for s in json.loads(done.stdout)["servers"]] == ["s"]


@pytest.mark.timeout(60)
def test_a_symlink_to_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "config.yaml"
    link.symlink_to(fifo)
    line = one_error_line(run("status", str(link), env=environment(tmp_path), timeout=50))
    assert str(link) in line


def test_a_symlink_loop_is_one_line(tmp_path: Path) -> None:
    link = tmp_path / "config.yaml"
    link.symlink_to(link)
    one_error_line(run("status", str(link), env=environment(tmp_path)))


# --- item 6 ------------------------------------------------------------------------------


def test_variables_are_interpolated_as_hermes_does(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "mcp_servers:\n  s:\n    url: https://${MCP_HOST}/mcp\n    auth: oauth\n"
        "    oauth:\n      client_id: ${env:CID}\n      client_secret: ${SECRET}\n"
    )
    env = environment(tmp_path, MCP_HOST="mcp.example.com", CID="c1", SECRET="s3cr3t")
    done = run("status", str(config), "--json", "--store", str(tmp_path / "t"), env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["servers"][0]["url"] == "https://mcp.example.com/mcp"
    assert "s3cr3t" not in done.stdout + done.stderr
    env.pop("SECRET")
    line = one_error_line(run("status", str(config), "--store", str(tmp_path / "t"), env=env))
    assert "'SECRET'" in line and "oauth.client_secret" in line and "'s'" in line


# --- item 7 ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://x.example:99999/mcp", "https://x.example:-1/mcp"])
def test_a_url_with_an_impossible_port_is_exit_2(tmp_path: Path, url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"mcp_servers:\n  s:\n    url: {url}\n    auth: oauth\n")
    line = one_error_line(
        run("authorize", str(config), "--store", str(tmp_path / "t"), env=environment(tmp_path))
    )
    assert "'s'" in line and "url" in line


# --- item 8 ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nonexistent.json", "nonexistent.yaml"])
def test_login_of_a_missing_file_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    line = one_error_line(run("login", str(tmp_path / name), env=environment(tmp_path)))
    assert "Errno" not in line and "no such file" in line


def recording_browser(tmp_path: Path) -> Path:
    """``$BROWSER``: follows the sandbox's automatic consent."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nexec {curl} -s -o /dev/null -L --max-time 30 "$1"\n')
    script.chmod(0o755)
    return script


@pytest.mark.timeout(240)
def test_login_and_the_example_host_take_a_hermes_config_yaml(tmp_path: Path) -> None:
    env = environment(tmp_path, BROWSER=str(recording_browser(tmp_path)))
    with Sandbox(servers=1) as sb:
        config = tmp_path / "config.yaml"
        config.write_text(
            "model: some/model\nmcp_servers:\n"
            "  tools:\n    command: npx\n"
            f"  sb:\n    url: {sb.servers[0].url}\n    auth: oauth\n"
        )
        done = run("login", str(config), "--store", str(tmp_path / "login-tokens"), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "sb" in done.stdout and "ok" in done.stdout and "skipped" in done.stdout
        example = [sys.executable, str(ROOT / "examples" / "host.py")]
        done = run(str(config), "--store", str(tmp_path / "host-tokens"), env=env, program=example)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "sb: list_tools: whoami" in done.stdout


# --- item 9 ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_an_unreachable_server_is_reported_as_unreachable(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there: the connection is refused
    url = f"http://127.0.0.1:{port}/mcp"
    config = tmp_path / "config.yaml"
    config.write_text(f"mcp_servers:\n  gone:\n    url: {url}\n    auth: oauth\n")
    done = run(
        "authorize",
        str(config),
        "--json",
        "--no-browser",
        "--store",
        str(tmp_path / "t"),
        env=environment(tmp_path),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (server,) = json.loads(done.stdout)["servers"]
    assert server["error_type"] == "ServerUnreachable", server
    assert url in server["error"] and "could not connect" in server["error"]


# --- item 10 -----------------------------------------------------------------------------

COMMANDS = [[], ["authorize"], ["status"], ["logout"], ["demo"], ["login"]]
FLAGS = {"-h", "--help", "--version", "--no-browser", "--json", "--all"}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_plain_text_with_every_default_shown(tmp_path: Path, command: list[str]) -> None:
    done = run(*command, "--help", env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "``" not in text and ":func:" not in text
    entries: list[str] = []
    for line in text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            entries.append(line)
        elif entries and line.startswith("   "):
            entries[-1] += " " + line.strip()
    assert entries
    for entry in entries:
        names = set(re.findall(r"--?[\w-]+", entry.strip().split("  ")[0]))
        if names & FLAGS:
            continue  # a flag: off unless given
        assert "default" in entry, entry


def test_version_is_the_installed_distributions(tmp_path: Path) -> None:
    done = run("--version", env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == version("mcp-oauth-flows")


ALLOWED = {"runner", "runner._cli", "runner._cli._main", "runner._cli._errors", "runner.errors"}


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_load_no_other_runner_module(tmp_path: Path, flag: str) -> None:
    probe = (
        "import sys\n"
        "from runner._cli._main import main\n"
        "try:\n"
        f"    main([{flag!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', *sorted(m for m in sys.modules if m == 'runner' "
        "or m.startswith('runner.')))\n"
    )
    done = run("-c", probe, env=environment(tmp_path), program=[sys.executable])
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split("MODULES", 1)[1].split())
    assert loaded <= ALLOWED, loaded - ALLOWED
