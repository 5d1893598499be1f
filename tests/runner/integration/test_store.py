"""TokenStore: 0600 files, atomic replace, unreadable files kept aside, hostile files refused,
names kept inside the directory, unsafe directories refused."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl

from runner._core import _stored as stored_module
from runner._core._stored import StoredLogin
from runner._stores import _token_store as store_module
from runner.errors import InvalidServerSpec
from runner.store import TokenStore, TokenStoreError, TokenStoreWarning


def a_login(token: str = "tok") -> StoredLogin:
    return StoredLogin(
        server_url="http://127.0.0.1:1/mcp",
        tokens=OAuthToken(access_token=token, refresh_token="ref", expires_in=60),
        expires_at=1234.5,
        client_info=OAuthClientInformationFull(
            client_id="cid", redirect_uris=[AnyUrl("http://127.0.0.1:5/callback")]
        ),
        oauth_metadata=None,
    )


def test_save_and_load(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    path = store.save("linear", a_login())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load("linear")
    assert loaded is not None
    assert loaded.tokens.access_token == "tok" and loaded.expires_at == 1234.5
    assert loaded.client_info is not None and loaded.client_info.client_id == "cid"
    assert "tok" not in repr(loaded)


def test_missing_is_none(tmp_path: Path) -> None:
    assert TokenStore(tmp_path).load("nobody") is None


def test_replace_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    for i in range(5):
        store.save("a", a_login(f"t{i}"))
    assert sorted(os.listdir(tmp_path)) == ["a.json"]
    loaded = store.load("a")
    assert loaded is not None and loaded.tokens.access_token == "t4"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"version": 1}',
        b'{"version": 1, "server_url": "u", "tokens": {"access_token": 5}}',
        b'{"version": 1, "server_url": "u", "tokens": {"access_token": "a"}, "expires_at": "x"}',
        b"\xff\xfe",
    ],
)
def test_unreadable_file_is_kept_aside(tmp_path: Path, content: bytes) -> None:
    store = TokenStore(tmp_path)
    store.path_for("srv").write_bytes(content)
    with pytest.warns(TokenStoreWarning, match="kept as"):
        assert store.load("srv") is None
    assert not store.path_for("srv").exists()
    (aside,) = tmp_path.glob("srv.json.corrupt-*")
    assert aside.read_bytes() == content
    store.save("srv", a_login())  # and the store goes on working
    assert store.load("srv") is not None


def test_delete(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.save("a", a_login())
    assert store.delete("a") and not store.delete("a")


# --------------------------------------------------------------------------- hostile files
#
# Each case stands in a token file's place. load must refuse it at once (never read a FIFO
# or 2 GB), keep it aside untouched, warn naming it, and report "no login" (None).


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("kept")


def make_symlink(path: Path) -> None:
    target = path.parent.parent / "elsewhere.json"
    target.write_text(json.dumps(a_login().to_dict()))  # a valid record, but not ours
    path.symlink_to(target)


def make_sparse(path: Path) -> None:
    path.touch()
    os.truncate(path, 2**31)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "make", [make_fifo, make_directory, make_symlink, make_sparse], ids=lambda f: f.__name__
)
def test_a_non_regular_or_huge_file_is_refused_at_once_and_kept(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    store = TokenStore(tmp_path / "store")
    store.save("other", a_login())  # creates the directory; a bystander that must survive
    path = store.path_for("srv")
    make(path)
    before = path.lstat()
    started = time.monotonic()
    with pytest.warns(TokenStoreWarning, match=rf"{re.escape(str(path))}.*kept as"):
        assert store.load("srv") is None
    assert time.monotonic() - started < 1.0
    assert not os.path.lexists(path)
    (aside,) = (tmp_path / "store").glob("srv.json.corrupt-*")
    after = aside.lstat()
    assert (after.st_ino, after.st_mode, after.st_size) == (
        before.st_ino,
        before.st_mode,
        before.st_size,
    )  # the very same file, moved, not copied or truncated
    if make is make_directory:
        assert (aside / "inside").read_text() == "kept"
    if make is make_symlink:
        assert StoredLogin.from_json((tmp_path / "elsewhere.json").read_bytes())
    assert store.load("other") is not None
    store.save("srv", a_login())  # and the store goes on working
    assert store.load("srv") is not None


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


BAD_FIELDS: list[tuple[str, object]] = [
    ("version", "1"),
    ("version", True),
    ("version", 2),
    ("server_url", None),
    ("server_url", 5),
    ("server_url", ["http://x"]),
    ("server_url", "ftp://x/mcp"),
    ("server_url", "http://x/\x1b[31m"),
    ("tokens", None),
    ("tokens", "tok"),
    ("tokens", ["tok"]),
    ("tokens", {"access_token": ["a"]}),
    ("tokens", {"access_token": "a", "expires_in": "soon"}),
    ("tokens", {"access_token": "a", "token_type": 5}),
    ("expires_at", "x"),
    ("expires_at", [1]),
    ("expires_at", True),
    ("expires_at", {"a": 1}),
    ("client_info", "cid"),
    ("client_info", [1]),
    ("client_info", {"client_id": 5}),
    ("client_info", {"client_id": "c", "redirect_uris": "http://x"}),
    ("oauth_metadata", 1),
    ("oauth_metadata", {"issuer": "not a url"}),
    ("saved_at", [1]),
    ("saved_at", "yesterday"),
    ("saved_at", {}),
    ("saved_at", 10**400),
]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(deep(100_000), id="nested-list-100000"),
        pytest.param(deep(500), id="nested-list-500"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="nested-object"),
        pytest.param(
            json.dumps({**a_login().to_dict(), "expires_at": math.nan}).encode(), id="nan"
        ),
        pytest.param(
            json.dumps({**a_login().to_dict(), "saved_at": -math.inf}).encode(), id="infinity"
        ),
        pytest.param(b'{"version": 1, "saved_at": ' + b"9" * 5000 + b"}", id="huge-int"),
        *(
            pytest.param(
                json.dumps({**a_login().to_dict(), key: value}).encode(), id=f"{key}={value!r}"[:40]
            )
            for key, value in BAD_FIELDS
            if not (isinstance(value, int) and value > 2**64)
        ),
        pytest.param(
            json.dumps(a_login().to_dict())[:-1].encode() + b', "saved_at": ' + b"1" * 400 + b"}",
            id="saved_at=400-digit-int",
        ),
    ],
)
def test_a_bad_record_is_kept_aside_with_its_bytes(tmp_path: Path, content: bytes) -> None:
    store = TokenStore(tmp_path / "store")
    store.save("srv", a_login())
    path = store.path_for("srv")
    path.write_bytes(content)
    with pytest.warns(TokenStoreWarning, match=rf"{re.escape(str(path))}.*kept as"):
        assert store.load("srv") is None
    (aside,) = (tmp_path / "store").glob("srv.json.corrupt-*")
    assert aside.read_bytes() == content


def test_a_warning_never_quotes_a_token(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "store")
    path = store.save("srv", a_login("SECRET-TOKEN"))
    for bad in ("SECRET-2", ["SECRET-3"]):
        path.write_text(json.dumps({**a_login("SECRET-TOKEN").to_dict(), "expires_at": bad}))
        with pytest.warns(TokenStoreWarning) as caught:
            assert store.load("srv") is None
        assert "SECRET" not in str(caught[0].message)
    path.write_text(json.dumps({**a_login().to_dict(), "tokens": {"access_token": ["SECRET"]}}))
    with pytest.warns(TokenStoreWarning) as caught:
        store.load("srv")
    assert "SECRET" not in str(caught[0].message)


@pytest.mark.parametrize("code", [errno.EMFILE, errno.EIO, errno.ENFILE])
def test_a_failure_of_the_moment_leaves_a_good_file_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store = TokenStore(tmp_path / "store")
    path = store.save("srv", a_login())
    content = path.read_bytes()

    def failing(path: object, *, limit: int) -> bytes:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store_module, "read_state_file", failing)
    with pytest.raises(TokenStoreError, match=rf"{re.escape(str(path))}.*left in place"):
        store.load("srv")
    assert path.read_bytes() == content
    assert list((tmp_path / "store").glob("*.corrupt-*")) == []


def test_a_bad_file_that_cannot_be_moved_aside_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TokenStore(tmp_path / "store")
    store.save("srv", a_login())
    store.path_for("srv").write_bytes(b"{broken")

    def refuse(path: object) -> Path:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(store_module, "keep_aside", refuse)
    with pytest.raises(TokenStoreError, match="could not be moved aside"):
        store.load("srv")
    assert store.path_for("srv").read_bytes() == b"{broken"


# --------------------------------------------------------------------------- names

TRAVERSAL_NAMES = ["../x", "../../x", "a/b", "/tmp/x", "", ".", "..", "a\0b", "x" * 65, "~x"]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root (symlinks not followed) -> (inode, size)."""
    found: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [*dirnames, *filenames]:
            info = os.lstat(os.path.join(dirpath, entry))
            found[os.path.relpath(os.path.join(dirpath, entry), root)] = (info.st_ino, info.st_size)
    return found


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_no_name_leaves_the_directory(tmp_path: Path, name: str) -> None:
    store_dir = tmp_path / "store"
    store = TokenStore(store_dir)
    store.save("srv", a_login())
    for bait in ("x.json", "x", "b.json"):  # what a traversal would hit
        (tmp_path / bait).write_text("bait")
    (store_dir / "a").mkdir()
    (store_dir / "a" / "b.json").write_text(json.dumps(a_login().to_dict()))
    before = tree(tmp_path)
    attempts: list[Callable[[], object]] = [
        lambda: store.path_for(name),
        lambda: store.load(name),
        lambda: store.save(name, a_login()),
        lambda: store.delete(name),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidServerSpec, match="name"):
            attempt()
    assert tree(tmp_path) == before


def test_store_reexports_the_record_from_its_pure_module() -> None:
    assert store_module.StoredLogin is stored_module.StoredLogin


def test_save_replaces_a_symlink_and_delete_removes_only_the_link(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "store")
    store.save("other", a_login())
    outside = tmp_path / "outside.json"
    outside.write_text("not yours")
    store.path_for("srv").symlink_to(outside)
    assert store.delete("srv")
    assert outside.read_text() == "not yours" and not os.path.lexists(store.path_for("srv"))
    store.path_for("srv").symlink_to(outside)
    path = store.save("srv", a_login())
    assert not path.is_symlink() and outside.read_text() == "not yours"


def test_delete_of_a_directory_in_place_is_an_error(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "store")
    store.save("other", a_login())
    store.path_for("srv").mkdir()
    with pytest.raises(TokenStoreError, match="cannot remove"):
        store.delete("srv")
    assert store.path_for("srv").is_dir()


# --------------------------------------------------------------------------- directory


def test_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(TokenStoreError, match=rf"{re.escape(str(directory))}.*writable.*chmod"):
        TokenStore(directory)


def test_a_directory_made_unsafe_later_is_refused_at_every_door(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = TokenStore(directory)  # missing: fine until the first save
    store.save("srv", a_login())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    directory.chmod(0o770)
    for attempt in (
        lambda: store.load("srv"),
        lambda: store.save("srv", a_login()),
        lambda: store.delete("srv"),
    ):
        with pytest.raises(TokenStoreError, match="writable"):
            attempt()
    assert store.path_for("srv").exists()


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to chown")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir(mode=0o700)
    os.chown(directory, 12345, -1)
    with pytest.raises(TokenStoreError, match=rf"{re.escape(str(directory))}.*uid 12345"):
        TokenStore(directory)


def test_a_file_in_the_directory_s_place_is_refused(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("")
    with pytest.raises(TokenStoreError, match="not a directory"):
        TokenStore(tmp_path / "store")


def test_a_missing_directory_loads_nothing_and_is_created_private(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "a" / "store")
    assert store.load("srv") is None and not store.delete("srv")
    assert not (tmp_path / "a").exists()
    store.save("srv", a_login())
    assert stat.S_IMODE((tmp_path / "a" / "store").stat().st_mode) == 0o700
