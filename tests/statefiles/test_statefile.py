"""statefiles against real files in ``tmp_path``: what stands where a state file should.

Each case that could block (a FIFO) runs in a worker thread joined with a bound, so a
regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from statefiles import (
    UnreadableStateFile,
    UnsafeDirectory,
    check_private_directory,
    decode_json,
    keep_aside,
    read_state_file,
)

from support.waiting import bounded

LIMIT = 64 * 1024
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def fifo(path: Path) -> Path:
    os.mkfifo(path, 0o600)
    return path


# --- read_state_file ---------------------------------------------------------------------------


def test_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b'{"a": 1}')
    assert read_state_file(path, limit=LIMIT) == b'{"a": 1}'


def test_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"x" * LIMIT)
    assert read_state_file(path, limit=LIMIT) == b"x" * LIMIT


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert read_state_file(tmp_path / "absent.json", limit=LIMIT) is None


def test_fifo_is_refused_at_once(tmp_path: Path) -> None:
    path = fifo(tmp_path / "state.json")
    with pytest.raises(UnreadableStateFile, match="FIFO") as caught:
        bounded(lambda: read_state_file(path, limit=LIMIT))
    assert caught.value.path == str(path)
    assert isinstance(caught.value, ValueError)


def test_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    with pytest.raises(UnreadableStateFile, match="directory"):
        read_state_file(path, limit=LIMIT)


def test_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_bytes(b"{}")
    link = tmp_path / "state.json"
    link.symlink_to(target)
    with pytest.raises(UnreadableStateFile, match="symbolic link"):
        read_state_file(link, limit=LIMIT)


def test_symlink_to_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    link = tmp_path / "state.json"
    link.symlink_to(fifo(tmp_path / "pipe"))
    with pytest.raises(UnreadableStateFile, match="symbolic link"):
        bounded(lambda: read_state_file(link, limit=LIMIT))


def test_sparse_2gb_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.touch()
    os.truncate(path, 2 * 1024**3)  # sparse: no disk used, but 2 GB if read
    with pytest.raises(UnreadableStateFile, match=r"2147483648 bytes, more than 65536"):
        bounded(lambda: read_state_file(path, limit=LIMIT))


def test_file_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"x" * (LIMIT + 1))
    with pytest.raises(UnreadableStateFile, match="more than"):
        read_state_file(path, limit=LIMIT)


def test_file_growing_past_the_limit_while_read_is_refused(tmp_path: Path) -> None:
    # A file that is small at fstat and grows before it is read (another writer appends):
    # made deterministic by growing it from inside fstat.
    path = tmp_path / "state.json"
    path.write_bytes(b"small")
    real_fstat = os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        with open(path, "ab") as writer:
            writer.write(b"y" * (LIMIT * 2))
        return info

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fstat", fstat_then_grow)
        with pytest.raises(UnreadableStateFile, match=f"more than {LIMIT} bytes"):
            read_state_file(path, limit=LIMIT)


def test_file_growing_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"small")
    real_fstat = os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        with open(path, "ab") as writer:
            writer.write(b"+more")
        return info

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fstat", fstat_then_grow)
        assert read_state_file(path, limit=LIMIT) == b"small+more"


def test_mode_000_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"{}")
    path.chmod(0)
    if AS_ROOT:  # root reads any file: nothing to refuse
        assert read_state_file(path, limit=LIMIT) == b"{}"
    else:
        with pytest.raises(UnreadableStateFile, match=r"[Pp]ermission"):
            read_state_file(path, limit=LIMIT)


def test_unix_socket_file_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s.json"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        with pytest.raises(UnreadableStateFile):
            read_state_file(path, limit=LIMIT)
    finally:
        server.close()


# --- decode_json -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"1" * 5000, "not JSON"),  # past the int-string conversion limit
        (b"", "not JSON"),
    ],
    ids=["nested", "not-utf8", "garbage", "huge-int", "empty"],
)
def test_decode_json_raises_only_unreadable(data: bytes, reason: str) -> None:
    with pytest.raises(UnreadableStateFile, match=reason):
        decode_json(data, path="state.json")


def test_decode_json_parses_json() -> None:
    assert decode_json(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}


# --- keep_aside --------------------------------------------------------------------------------


def _only_aside(directory: Path, name: str) -> Path:
    (aside,) = directory.glob(f"{name}.corrupt-*")
    return aside


def test_keep_aside_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"bad")
    aside = keep_aside(path)
    assert not os.path.lexists(path)
    assert aside == _only_aside(tmp_path, "state.json")
    assert aside.read_bytes() == b"bad"


def test_keep_aside_fifo_directory_and_symlink(tmp_path: Path) -> None:
    kinds: dict[str, Callable[[Path], object]] = {
        "fifo": fifo,
        "dir": lambda p: p.mkdir(),
        "link": lambda p: p.symlink_to(tmp_path / "nowhere"),
        "dirlink": lambda p: p.symlink_to(tmp_path),
    }
    checks: dict[str, Callable[[int], bool]] = {
        "fifo": stat.S_ISFIFO,
        "dir": stat.S_ISDIR,
        "link": stat.S_ISLNK,
        "dirlink": stat.S_ISLNK,
    }
    for kind, make in kinds.items():
        path = tmp_path / f"{kind}.json"
        make(path)
        aside = bounded(lambda path=path: keep_aside(path))  # type: ignore[misc]
        assert not os.path.lexists(path), kind
        assert checks[kind](os.lstat(aside).st_mode), kind
        assert aside.parent == tmp_path


def test_keep_aside_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    kept: dict[Path, bytes] = {}
    for round_ in range(20):  # many within the same microsecond stamp or not: all kept
        content = f"round {round_}".encode()
        path.write_bytes(content)
        kept[keep_aside(path)] = content
    assert len(kept) == 20
    assert {p: p.read_bytes() for p in tmp_path.glob("state.json.corrupt-*")} == kept


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_keep_aside_when_the_name_is_taken_tries_another(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "state.json"
    path.mkdir() if kind == "directory" else path.write_bytes(b"bad")
    taken = tmp_path / "taken"
    taken.mkdir() if kind == "directory" else taken.write_bytes(b"do not touch")
    names = iter([taken, tmp_path / "free"])
    with pytest.MonkeyPatch.context() as patch:
        # The random name collides once: the second name must be used, the first kept intact.
        patch.setattr("statefiles._reading._aside_name", lambda _path, _now: next(names))
        assert keep_aside(path) == tmp_path / "free"
    assert os.path.lexists(tmp_path / "free")
    assert not os.path.lexists(path)
    if kind == "file":
        assert taken.read_bytes() == b"do not touch"
    else:
        assert taken.is_dir()


def test_keep_aside_of_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        keep_aside(tmp_path / "absent")


# --- check_private_directory -------------------------------------------------------------------


def test_private_directory_is_created_0700(tmp_path: Path) -> None:
    directory = check_private_directory(tmp_path / "a" / "b")
    assert directory == tmp_path / "a" / "b"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_group_or_world_writable_directory_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(UnsafeDirectory, match=f"world-writable \\(mode {mode:o}\\); run chmod"):
        check_private_directory(directory)


def test_readable_but_not_writable_by_others_is_accepted(tmp_path: Path) -> None:
    directory = tmp_path / "shared-read"
    directory.mkdir()
    directory.chmod(0o755)
    assert check_private_directory(directory) == directory


@pytest.mark.skipif(not AS_ROOT, reason="chown to another uid needs root")
def test_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 12345, -1)
    with pytest.raises(UnsafeDirectory, match="belongs to uid 12345") as caught:
        check_private_directory(directory)
    assert caught.value.path == str(directory)


def test_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(UnsafeDirectory, match="is a regular file, not a directory"):
        check_private_directory(regular)


def test_symlink_is_refused_without_following(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert check_private_directory(link) == link  # followed by default
    with pytest.raises(UnsafeDirectory, match="symbolic link, not a directory"):
        check_private_directory(link, follow_symlinks=False)


def test_missing_directory_without_create(tmp_path: Path) -> None:
    with pytest.raises(UnsafeDirectory, match="does not exist"):
        check_private_directory(tmp_path / "absent", create=False)
