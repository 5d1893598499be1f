"""Where each server's tokens and client registration live between runs. File I/O.

The record itself (``StoredLogin``) and its decoder live in ``runner._core._stored`` (pure);
``runner.store`` re-exports them for hosts.

Guarantees:

- one file per server, ``<dir>/<name>.json``, mode 0600 in a 0700 directory, written
  to a temporary file in the same directory and ``os.replace``-d into place, so a reader
  sees the old file or the new one, never a torn one;
- a name is checked at every door (``path_for``, ``load``, ``save``, ``delete``) with the
  rule ``ServerSpec`` uses (``runner._core._spec.check_server_name``): a name that could leave the
  directory (``../x``, ``a/b``, ``""``, ``.``, ``..``, NUL, over 64 characters) raises
  ``InvalidServerSpec`` before any file is touched;
- the directory must be this user's and writable by nobody else (a group- or world-writable
  directory, or another user's, would let someone swap token files): it is checked when the
  store is built (if it exists) and before every load, save and delete; one that is not is
  a ``TokenStoreError`` saying what to do. ``save`` creates a missing one with mode 0700;
- a token file is read without blocking and with a bound (``statefiles``): a FIFO,
  a directory, a symlink, a device, a file over ``MAX_TOKEN_FILE_BYTES`` or one that does not
  decode as a login record is refused without being read (or after at most
  ``MAX_TOKEN_FILE_BYTES + 1`` bytes), moved aside to ``<name>.json.corrupt-<time>-<random>``
  (kept, never deleted), a ``TokenStoreWarning`` names both paths, and ``load`` returns None:
  the server logs in afresh;
- a failure of the moment (no descriptors left, an I/O error, a full disk) is a
  ``TokenStoreError`` and leaves every file where it was: a good file is never moved aside
  because the system was busy;
- ``delete`` removes the name itself: a symlink in a token file's place is unlinked, its
  target is left alone;
- only the parent process writes here (children report over their pipe);
- ``hold(name, timeout)`` is one server's login lock across processes: an exclusive
  ``flock`` on ``<dir>/<name>.lock`` (``statefiles``), created 0600 and never
  deleted or moved (waiters share its inode), never followed if a symlink stands there.
  It waits at most ``timeout`` seconds, then ``TokenStoreError`` naming the file. The
  kernel drops it when its holder dies, so a waiter takes over from a dead leader. It
  guards the whole of a login (load, refresh or browser flow, save), not single file
  operations: ``load`` and ``save`` do not take it (``os.replace`` keeps readers safe);
- nothing here logs a token or a secret (messages name files and fields, never values).

Not guaranteed: durability across a power cut (no fsync of the directory); exclusion
between processes that do not take ``hold``, or over a network file system (``flock`` is
advisory and local). Every call does blocking disk I/O: call it off an event loop
(``runner._parent._offloop.holding`` for ``hold``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Final

import filelock

from runner._core._spec import check_server_name
from runner._core._stored import STORE_VERSION, InvalidLoginRecord, StoredLogin
from runner._stores._sdk_storage import StoreTokenStorage
from runner.errors import (
    InvalidServerSpec,
    LoginLockTimeout,
    NotALoginFile,
    TokenStoreError,
    TokenStoreWarning,
)
from statefiles import (
    UnreadableStateFile,
    UnsafeDirectory,
    check_private_directory,
    keep_aside,
    lock_file,
    read_state_file,
    unlock_file,
)

__all__ = [
    "MAX_TOKEN_FILE_BYTES",
    "STORE_VERSION",
    "InvalidLoginRecord",
    "LoginLockTimeout",
    "StoredLogin",
    "Survey",
    "TokenStore",
    "TokenStoreError",
    "TokenStoreWarning",
    "default_store_dir",
    "read_own_bytes",
]

logger = logging.getLogger(__name__)

#: The largest token file read. A login record is a few KB (tokens, a client registration,
#: the server's metadata); a file of a megabyte is not one, and is refused unread.
MAX_TOKEN_FILE_BYTES: Final = 1 << 20


def default_store_dir() -> Path:
    """``$MCP_OAUTH_DIR``, else the per-user state directory of the platform."""
    explicit = os.environ.get("MCP_OAUTH_DIR")
    if explicit:
        return Path(explicit)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "mcp-oauth-flows"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _stranger(path: Path, why: str) -> NotALoginFile:
    return NotALoginFile(
        path,
        f"{path} is not a login of this store ({why}); left alone: move or remove it "
        "yourself if it is not needed",
    )


def read_own_bytes(path: Path) -> bytes | None:
    """A token file's bytes, read bounded and without blocking, for deciding whether it is a
    login of a store (None: no file). Never moves anything.

    Raises:
        NotALoginFile: something stands there that is no regular file of a sane size.
        TokenStoreError: reading failed for a reason of the moment.
    """
    try:
        return read_state_file(path, limit=MAX_TOKEN_FILE_BYTES)
    except UnreadableStateFile as exc:
        raise _stranger(path, exc.reason) from None
    except OSError as exc:
        raise TokenStoreError(
            path, f"cannot read {path} now ({_why(exc)}); it was left in place"
        ) from exc


@dataclasses.dataclass(frozen=True)
class Survey:
    """A token directory as ``logout --all`` sees it (``TokenStore.survey``).

    Attributes:
        logins: The server names with a login here, sorted.
        strangers: Every file that looks like a login but is not one (each a
            ``NotALoginFile`` naming it and why); they are never removed.
    """

    logins: tuple[str, ...]
    strangers: tuple[NotALoginFile, ...]


class TokenStore:
    """Token files of one user, one file per server name.

    Raises:
        TokenStoreError: ``directory`` exists and is not private to this user.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = (
            Path(directory).expanduser() if directory is not None else default_store_dir()
        )
        self._check_directory(create=False)

    def __repr__(self) -> str:
        return f"TokenStore({str(self.directory)!r})"

    def _check_directory(self, *, create: bool) -> bool:
        """Whether the directory exists (after creating it, with ``create``); raises
        ``TokenStoreError`` when it exists but is not private to this user."""
        if not create:
            try:
                os.stat(self.directory)
            except FileNotFoundError:
                return False  # nothing stored yet; save creates it
            except OSError as exc:
                raise TokenStoreError(
                    self.directory,
                    f"cannot use token store directory {self.directory}: {_why(exc)}; "
                    "check its permissions or choose another directory",
                ) from exc
        try:
            check_private_directory(self.directory, create=create)
        except UnsafeDirectory as exc:
            raise TokenStoreError(self.directory, f"token store refused: {exc.message}") from None
        return True

    #: Who may hold ``hold``'s lock, for its timeout message (a subclass names its own).
    _LOCK_HOLDERS: ClassVar[str] = "another process"

    def lock_path_for(self, name: str) -> Path:
        """``<directory>/<name>.lock``, the file ``hold`` locks (a subclass may name another).

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
        """
        return self.directory / f"{check_server_name(name)}.lock"

    @contextlib.contextmanager
    def hold(self, name: str, timeout: float) -> Iterator[None]:
        """Hold ``name``'s login lock for the block: exclusive across processes (and across
        threads and ``TokenStore`` objects of one process), released at the block's end or
        by the kernel when this process dies.

        Blocks up to ``timeout`` seconds (a waiting helper thread, ``statefiles``);
        on an event loop use ``runner._parent._offloop.holding``. Not reentrant: holding it twice in
        one process waits for oneself.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            LoginLockTimeout: another process held it for ``timeout`` seconds (a
                ``TokenStoreError``).
            TokenStoreError: the directory is unsafe or cannot be created, or the lock
                file cannot be opened (a directory or a symlink in its place).
        """
        path = self.lock_path_for(name)
        self._check_directory(create=True)
        try:
            fd = lock_file(os.fspath(path), max(0.0, timeout))
        except filelock.Timeout:
            raise LoginLockTimeout(
                path,
                f"{name}: its login is held by {self._LOCK_HOLDERS} (lock {path}) and was "
                f"not released within {max(0.0, timeout):g} s",
            ) from None
        except OSError as exc:
            raise TokenStoreError(
                path,
                f"cannot lock {path} ({_why(exc)}); if something other than a plain file "
                "stands there, remove it",
            ) from exc
        try:
            yield
        finally:
            unlock_file(fd)

    def path_for(self, name: str) -> Path:
        """``<directory>/<name>.json``.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name (see
                ``runner._core._spec.check_server_name``), so it could leave the directory.
        """
        return self.directory / f"{check_server_name(name)}.json"

    def load(self, name: str) -> StoredLogin | None:
        """The stored login of ``name``, or None when there is none or it was unreadable
        (then moved aside, with a ``TokenStoreWarning``).

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            TokenStoreError: the directory is unsafe, reading failed for a reason of the
                moment (the file is left in place), or a bad file could not be moved aside.
        """
        path = self.path_for(name)
        if not self._check_directory(create=False):
            return None
        try:
            raw = read_state_file(path, limit=MAX_TOKEN_FILE_BYTES)
        except UnreadableStateFile as exc:
            self._set_aside(name, path, exc.reason)
            return None
        except OSError as exc:
            raise TokenStoreError(
                path,
                f"cannot read token file {path} now ({_why(exc)}); it was left in place; "
                "try again later",
            ) from exc
        if raw is None:
            return None
        try:
            return StoredLogin.from_json(raw)
        except InvalidLoginRecord as exc:
            self._set_aside(name, path, str(exc))
            return None

    def _set_aside(self, name: str, path: Path, reason: str) -> None:
        try:
            aside = keep_aside(path)
        except FileNotFoundError:
            return  # gone meanwhile (another process set it aside): nothing to load
        except OSError as exc:
            raise TokenStoreError(
                path,
                f"token file {path} is unreadable ({reason}) and could not be moved aside "
                f"({_why(exc)}); move or remove it by hand",
            ) from exc
        message = (
            f"token file {path} is unreadable ({reason}); kept as {aside}; {name} will log in again"
        )
        logger.warning(message)
        warnings.warn(message, TokenStoreWarning, stacklevel=3)

    def save(self, name: str, login: StoredLogin) -> Path:
        """Write ``login`` atomically with mode 0600; returns the file's path.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            TokenStoreError: the directory is unsafe or cannot be created, or writing failed
                (the previous file, if any, is unchanged).
        """
        path = self.path_for(name)
        self._check_directory(create=True)
        data = json.dumps(login.to_dict(), indent=2, sort_keys=True, allow_nan=False).encode()
        self._write_atomically(name, path, data)
        return path

    def _write_atomically(self, name: str, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path``: a 0600 temporary file in the same directory, then
        ``os.replace``, so a reader sees the old file or the new one, never a torn one.

        Raises:
            TokenStoreError: it could not be written (the previous file, if any, is unchanged).
        """
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise TokenStoreError(
                self.directory,
                f"cannot write in token store directory {self.directory} ({_why(exc)}); "
                f"{name}'s login was not saved",
            ) from exc
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp creates the file 0600
                f.write(data)
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise TokenStoreError(
                    path,
                    f"cannot write token file {path} ({_why(exc)}); {name}'s login was not "
                    "saved; the previous file, if any, is unchanged",
                ) from exc
            raise

    def delete(self, name: str) -> bool:
        """Forget ``name``'s login, and its mark of a refused client metadata document (so a
        fixed document is tried again); returns whether there was a login. Takes no lock:
        ``logout`` does.

        A symlink in the file's place is removed itself (``unlink`` never follows it).

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            TokenStoreError: the directory is unsafe, or the file could not be removed
                (a directory in its place, say).
        """
        path = self.path_for(name)
        if not self._check_directory(create=False):
            return False
        removed = False
        for each in (path, self.cimd_marker_for(name)):
            try:
                each.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise TokenStoreError(
                    each, f"cannot remove {each} ({_why(exc)}); remove it by hand"
                ) from exc
            removed = removed or each == path
        return removed

    def logout(self, name: str, *, timeout: float = 30.0) -> bool:
        """Forget ``name``'s login under its login lock (``hold``), so that a refresh in
        flight in another process finishes first and cannot write it back; returns whether
        there was one. Revokes nothing (``runner.logout`` does, then calls ``delete`` under
        the same lock).

        Only a file read back as a login (``read_own``) is removed, with its companions; a
        token directory that is a symlink is refused (``check_own_directory``).

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            LoginLockTimeout: another process held the lock for ``timeout`` seconds.
            NotALoginFile: the file is not a login of this store; it was left alone.
            TokenStoreError: the lock cannot be taken, the directory is a symlink or unsafe,
                or a file could not be removed.
        """
        self.check_own_directory()
        with self.hold(name, timeout):
            if self.read_own(name) is None:
                self.delete(name)  # no login; a leftover .cimd-off mark goes all the same
                return False
            return self.delete(name)

    # --- what logout may remove ----------------------------------------------------------
    # Logout deletes, so it reads first: a file goes only once it has been read back as a
    # login of this store (a folder of someone's JSON files, or a symlink to one, loses
    # nothing). Unlike ``load``, nothing here moves a file aside: a stranger is left alone.

    def check_own_directory(self) -> None:
        """Refuse a token directory that is a symlink: logout never follows one (it could
        name any folder), and says which link to replace.

        Raises:
            TokenStoreError: the directory is a symlink.
        """
        if not os.path.islink(self.directory):
            return
        try:
            target = os.readlink(self.directory)
        except OSError:
            target = "?"
        raise TokenStoreError(
            self.directory,
            f"token directory {self.directory} is a symbolic link (to {target}); logout does "
            "not follow it: use the real directory, or replace the link with it",
        )

    def read_own(self, name: str) -> StoredLogin | None:
        """``name``'s login, read without moving anything, or None when there is none.
        Call it under ``hold`` before removing the files.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            NotALoginFile: something is there that is not a login of this store (not a
                record, a symlink, a FIFO, too large); it is left alone.
            TokenStoreError: reading failed for a reason of the moment.
        """
        path = self.path_for(name)
        raw = read_own_bytes(path)
        if raw is None:
            return None
        try:
            return StoredLogin.from_json(raw)
        except InvalidLoginRecord as exc:
            raise _stranger(path, str(exc)) from None

    def survey(self) -> Survey:
        """What ``logout --all`` may log out: the names whose ``<name>.json`` reads as a login
        of this store, and every other ``*.json`` here as a ``NotALoginFile`` (never to be
        removed). Files starting with ``.`` (temporary files) are not looked at.

        Raises:
            TokenStoreError: the directory is a symlink or unsafe, or cannot be listed.
        """
        self.check_own_directory()
        if not self._check_directory(create=False):
            return Survey((), ())
        logins: list[str] = []
        strangers: list[NotALoginFile] = []
        for entry in self._entries():
            if not entry.endswith(".json") or entry.startswith("."):
                continue
            stem = entry[: -len(".json")]
            try:
                self.read_own(check_server_name(stem))
            except InvalidServerSpec:
                strangers.append(_stranger(self.directory / entry, "not a server name"))
            except NotALoginFile as exc:
                strangers.append(exc)
            except TokenStoreError as exc:
                strangers.append(NotALoginFile(exc.path, exc.message))
            else:
                logins.append(stem)
        return Survey(tuple(logins), tuple(strangers))

    def _entries(self) -> list[str]:
        try:
            return sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TokenStoreError(
                self.directory, f"cannot list {self.directory} ({_why(exc)})"
            ) from exc

    def cimd_marker_for(self, name: str) -> Path:
        """``<directory>/<name>.cimd-off``: the mark that the server refused this client's
        Client ID Metadata Document (a subclass may name another file).

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
        """
        return self.directory / f"{check_server_name(name)}.cimd-off"

    def cimd_refused(self, name: str) -> bool:
        """Whether ``name``'s server refused the Client ID Metadata Document (marked by
        ``mark_cimd_refused``, cleared by ``delete``): its logins register dynamically.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
        """
        return os.path.lexists(self.cimd_marker_for(name))

    def mark_cimd_refused(self, name: str) -> None:
        """Mark that ``name``'s server refused the Client ID Metadata Document: an empty
        file, created 0600 (never through a symlink), left as it is if it exists.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            TokenStoreError: the directory is unsafe, or the mark could not be written.
        """
        path = self.cimd_marker_for(name)
        self._check_directory(create=True)
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            os.close(os.open(path, flags, 0o600))
        except OSError as exc:
            raise TokenStoreError(
                path, f"cannot write {path} ({_why(exc)}); {name} will present its document again"
            ) from exc

    def storage(self, name: str, *, server_url: str | None = None) -> StoreTokenStorage:
        """The SDK's ``TokenStorage`` protocol over ``name``'s file, for a host that builds
        its own ``OAuthClientProvider`` (``runner.provider`` builds one that also refreshes
        under ``hold`` and logs in through the runner).

        Reads and writes run off the event loop; every write is a whole record through
        ``save`` (atomic, 0600), keeping the stored registration and server metadata.
        ``server_url`` is needed only to write the first record of a server with none yet.
        It does not take ``hold``. See ``runner._stores._sdk_storage.StoreTokenStorage``.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
        """
        return StoreTokenStorage(self, name, server_url=server_url)
