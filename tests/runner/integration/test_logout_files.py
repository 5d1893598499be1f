"""Logout never surprises: it removes only files it reads back as logins of the store (and
their companions), never follows a symlinked token directory, carries on past a failure and
says what it did not log out (exit 1). Real files, ``python -m runner logout`` in a
subprocess; no server (the logins stored here have no revocation endpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthToken

from runner.errors import NotALoginFile
from runner.hermes_store import HermesTokenStore
from runner.store import StoredLogin, TokenStore

PROJECT_FILES = {
    "package.json": '{"name": "my-app", "version": "1.0.0"}\n',
    "tsconfig.json": '{"compilerOptions": {"strict": true}}\n',
}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", "logout", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


def a_login() -> StoredLogin:
    """A login with no metadata: logout revokes nothing and needs no server."""
    return StoredLogin(
        server_url="http://127.0.0.1:9/mcp",
        tokens=OAuthToken(access_token="at", token_type="Bearer", refresh_token="rt"),
        expires_at=None,
        client_info=None,
        oauth_metadata=None,
    )


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).write_text(text)


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# --- only logins go ----------------------------------------------------------------------------


def test_logout_all_in_a_project_folder_removes_only_logins(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "project")
    write(folder, PROJECT_FILES)
    (folder / "notes.json").write_text("not json at all")  # a broken file named like a login
    store = TokenStore(folder)
    store.save("real", a_login())
    store.mark_cimd_refused("real")

    done = run_cli("--all", "--store", str(folder))

    assert done.returncode == 1, done.stdout + done.stderr
    assert "real: logged out" in done.stdout
    for kept in ("package.json", "tsconfig.json", "notes.json"):
        assert f"{folder / kept}: not logged out" in done.stdout, done.stdout
        assert "left alone" in done.stdout
    assert (folder / "package.json").read_text() == PROJECT_FILES["package.json"]
    assert (folder / "tsconfig.json").read_text() == PROJECT_FILES["tsconfig.json"]
    assert (folder / "notes.json").read_text() == "not json at all"
    assert names(folder) == {"package.json", "tsconfig.json", "notes.json", "real.lock"}


def test_a_named_logout_leaves_a_file_that_is_not_a_login(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "project")
    write(folder, PROJECT_FILES)

    done = run_cli("package", "--store", str(folder))

    assert done.returncode == 1, done.stdout + done.stderr
    assert "package: not logged out" in done.stdout and "not a login" in done.stdout
    assert (folder / "package.json").read_text() == PROJECT_FILES["package.json"]
    with pytest.raises(NotALoginFile):
        TokenStore(folder).logout("package")
    assert (folder / "package.json").exists()


def test_a_symlink_in_a_logins_place_is_left_alone(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "tokens")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(a_login().to_dict()))
    (folder / "linked.json").symlink_to(elsewhere)

    done = run_cli("--all", "--store", str(folder))

    assert done.returncode == 1, done.stdout + done.stderr
    assert "linked.json: not logged out" in done.stdout
    assert (folder / "linked.json").is_symlink() and elsewhere.exists()


# --- a symlinked token directory is never followed ---------------------------------------------


def test_a_symlinked_store_directory_is_refused(tmp_path: Path) -> None:
    real = private_dir(tmp_path / "real")
    write(real, PROJECT_FILES)
    TokenStore(real).save("kept", a_login())
    link = tmp_path / "link"
    link.symlink_to(real)

    for args in (["--all"], ["kept"]):
        done = run_cli(*args, "--store", str(link))
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stdout == ""
        (line,) = done.stderr.splitlines()
        assert str(link) in line and "symbolic link" in line and "real directory" in line
    assert names(real) == {"package.json", "tsconfig.json", "kept.json"}


def test_a_symlinked_hermes_token_directory_is_refused(tmp_path: Path) -> None:
    home = private_dir(tmp_path / "hermes")
    real = private_dir(tmp_path / "other")
    write(real, PROJECT_FILES)
    HermesTokenStore(tmp_path / "h2").save("srv", a_login())
    for each in (tmp_path / "h2" / "mcp-tokens").iterdir():
        each.rename(real / each.name)
    (home / "mcp-tokens").symlink_to(real)
    env = dict(os.environ)
    env.pop("HERMES_HOME", None)

    done = run_cli("--all", "--hermes-home", str(home), env=env)

    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert "mcp-tokens" in line and "symbolic link" in line
    assert {"package.json", "tsconfig.json", "srv.json"} <= names(real)


# --- carry on past a failure -------------------------------------------------------------------


def test_logout_all_carries_on_past_a_failure_and_exits_1(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "tokens")
    store = TokenStore(folder)
    for name in ("a", "b", "c"):
        store.save(name, a_login())
    (folder / "b.lock").mkdir()  # b's login lock cannot be taken

    done = run_cli("--all", "--store", str(folder))

    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "a: logged out" in lines and "c: logged out" in lines
    assert any(line.startswith("b: not logged out (") for line in lines), lines
    assert store.load("b") is not None  # b kept, a and c gone
    assert store.load("a") is None and store.load("c") is None


# --- hermes ------------------------------------------------------------------------------------


def test_hermes_files_it_cannot_spell_or_read_are_reported_and_exit_1(tmp_path: Path) -> None:
    home = tmp_path / "hermes"
    store = HermesTokenStore(home)
    store.save("ok", a_login())
    tokens = home / "mcp-tokens"
    good = (tokens / "ok.json").read_text()
    long_stem = "x" * 100  # hermes names up to 128 characters; a server name here 64
    (tokens / f"{long_stem}.json").write_text(good)
    (tokens / "café.json").write_text(good)
    (tokens / "settings.json").write_text('{"theme": "dark"}')  # not a token file
    (tokens / "settings.client.json").write_text("{}")
    env = dict(os.environ)
    env.pop("HERMES_HOME", None)

    done = run_cli("--all", "--hermes-home", str(home), env=env)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "ok: logged out" in done.stdout
    for stem in (long_stem, "café", "settings"):
        assert f"{tokens / stem}.json: not logged out" in done.stdout, done.stdout
        assert (tokens / f"{stem}.json").exists()
    assert (tokens / "settings.client.json").exists()
    assert "log it out in hermes" in done.stdout
    assert not (tokens / "ok.json").exists() and (tokens / "ok.json.refresh.lock").exists()


def test_a_hermes_login_goes_with_its_companions(tmp_path: Path) -> None:
    home = tmp_path / "hermes"
    store = HermesTokenStore(home)
    store.save("srv", a_login())
    tokens = home / "mcp-tokens"
    write(tokens, {"srv.client.json": "{}", "srv.meta.json": "{}"})  # unreadable companions
    store.mark_cimd_refused("srv")
    env = dict(os.environ)
    env.pop("HERMES_HOME", None)

    done = run_cli("srv", "--hermes-home", str(home), env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "srv: logged out" in done.stdout
    assert names(tokens) == {"srv.json.refresh.lock"}
