"""TokenStore.hold, the per-server login lock across processes, and offloop.holding."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from runner._parent._offloop import holding
from runner.errors import InvalidServerSpec
from runner.store import LoginLockTimeout, TokenStore, TokenStoreError

pytestmark = pytest.mark.anyio

HOLDER = r"""
import sys
from runner.store import TokenStore
with TokenStore(sys.argv[1]).hold(sys.argv[2], 10):
    print("HELD", flush=True)
    sys.stdin.read()  # until the test closes our stdin, or kills us
"""


def start_holder(directory: Path, name: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "HELD\n"
    return holder


def test_another_process_holding_the_lock_times_out_naming_the_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    holder = start_holder(store.directory, "srv")
    try:
        started = time.monotonic()
        with pytest.raises(LoginLockTimeout) as caught, store.hold("srv", 0.3):
            pass
        assert 0.25 < time.monotonic() - started < 5
        assert isinstance(caught.value, TokenStoreError)
        assert "another process" in str(caught.value)
        assert str(store.lock_path_for("srv")) in str(caught.value)
        with store.hold("other", 0):  # one lock per server
            pass
    finally:
        holder.kill()
        holder.wait()
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()


def test_a_dead_holder_frees_the_lock(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    holder = start_holder(store.directory, "srv")
    holder.kill()
    holder.wait()
    for stream in (holder.stdin, holder.stdout):
        if stream is not None:
            stream.close()
    with store.hold("srv", 5):
        pass


def test_the_lock_file_is_private_and_kept(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    with store.hold("srv", 1):
        inode = os.stat(store.lock_path_for("srv")).st_ino
    mode = os.stat(store.lock_path_for("srv")).st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    with store.hold("srv", 1):
        assert os.stat(store.lock_path_for("srv")).st_ino == inode  # the same file


def test_a_symlink_in_place_of_the_lock_is_refused(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    store.directory.mkdir(mode=0o700)
    (store.directory / "srv.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TokenStoreError), store.hold("srv", 0.1):
        pass
    assert not (tmp_path / "elsewhere").exists()


def test_a_bad_name_is_refused_before_any_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    with pytest.raises(InvalidServerSpec), store.hold("../x", 0.1):
        pass
    assert not (tmp_path / "x.lock").exists()


async def test_holding_excludes_and_releases(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    async with holding(store, "srv", 1):
        with pytest.raises(LoginLockTimeout):
            async with holding(TokenStore(store.directory), "srv", 0.2):
                pass
    # Released at the block's end. Not with timeout 0: the timed-out wait above left its
    # helper thread in flock() (statefiles), and it may take the lock for an instant
    # after the release before letting it go; a leaked lock would fail this wait too.
    async with holding(store, "srv", 5):
        pass


async def test_a_cancelled_wait_leaves_nothing_locked(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    holder = start_holder(store.directory, "srv")
    try:
        with anyio.move_on_after(0.3) as scope:
            async with holding(store, "srv", 30):
                pytest.fail("the lock was held by the other process")
        assert scope.cancelled_caught
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the holder releases and exits
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    # The abandoned wait got the lock when the holder left, and let it go at once: a
    # leaked lock would keep this wait (same process, another descriptor) out.
    async with holding(store, "srv", 5):
        pass
