"""Reading small private state files that another process or a person may have written.

A lease file or a token file is a few kilobytes of JSON in a directory of one user. Anything
may stand in its place: a FIFO (an ``open`` that never returns), a directory, a symlink, a
sparse file of gigabytes, JSON nested a million deep. This module is the one way both the lease
registry and the token store read such a file, keep aside one that cannot be read, and check
the directory they live in.

Guarantees:
    * ``read_state_file`` never blocks on the file: it opens with ``O_NONBLOCK | O_NOFOLLOW``,
      ``fstat``-s the descriptor and refuses anything but a regular file, refuses a file larger
      than ``limit`` before reading a byte, and reads at most ``limit + 1`` bytes. (It still
      does blocking disk I/O: call it off an event loop.)
    * ``decode_json`` raises only ``ValueError`` (``UnreadableStateFile``), whatever the bytes:
      bad UTF-8, bad JSON, nesting deeper than the interpreter's recursion limit.
    * ``keep_aside`` renames, never deletes or overwrites: the bad file stays for a person to
      look at, beside the good one.
    * ``check_private_directory`` refuses (``UnsafeDirectory``) a directory that another user
      owns or that group or others may write: there someone else could swap our files.

Not guaranteed: that the file does not change between two reads (callers hold their own lock
where that matters), or anything on Windows beyond the regular-file and size checks.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import sys
import time
from pathlib import Path
from typing import Any, Final

__all__ = [
    "UnreadableStateFile",
    "UnsafeDirectory",
    "check_private_directory",
    "decode_json",
    "keep_aside",
    "read_state_file",
]

_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)  # a terminal planted there must not become ours
    | getattr(os, "O_BINARY", 0)
)
#: Bound on names tried by ``keep_aside`` (each has 24 random bits: a second try is rare).
_ASIDE_ATTEMPTS: Final = 8
#: Errors that say something about the file itself (keep it aside), not about this moment
#: (out of descriptors, an I/O error): those propagate as ``OSError``.
_BAD_FILE_ERRNOS: Final = frozenset(
    {errno.ELOOP, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENXIO, errno.ENOTDIR}
)


class UnreadableStateFile(ValueError):
    """The file exists but is not a state file that can be read: keep it aside.

    Attributes:
        path: the file.
        reason: what is wrong, a short phrase ("a FIFO, not a regular file").
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


class UnsafeDirectory(Exception):
    """A state directory that is not private to this user, or not a directory at all.

    ``str(err)`` names the directory, what is wrong and what to do.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(message)
        self.path = os.fspath(path)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.message))


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def read_state_file(path: str | os.PathLike[str], *, limit: int) -> bytes | None:
    """The whole content of a small regular file, or ``None`` when there is none.

    Args:
        path: the file; a symlink in its place is refused, not followed.
        limit: the largest size accepted, in bytes.

    Raises:
        UnreadableStateFile: something is there but it is not a regular file of at most
            ``limit`` bytes that this user may read. Keep it aside (``keep_aside``).
        OSError: a failure of the moment (no descriptors left, an I/O error); the file may be
            fine, leave it where it is.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in _BAD_FILE_ERRNOS:
            reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise UnreadableStateFile(path, reason) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableStateFile(path, f"{_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise UnreadableStateFile(path, f"{info.st_size} bytes, more than {limit}")
        chunks: list[bytes] = []
        size = 0
        # Ask for the size fstat gave plus one (the usual file: one read, then EOF), not for
        # ``limit + 1``: os.read allocates what it is asked for, megabytes on every call.
        want = info.st_size + 1
        while size <= limit:
            try:
                chunk = os.read(fd, min(want, limit + 1 - size))
            except OSError as exc:
                if exc.errno in _BAD_FILE_ERRNOS:
                    raise UnreadableStateFile(path, exc.strerror or str(exc)) from None
                raise
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            want = 65536  # it grew since fstat: go on in bounded steps
        if size > limit:  # it grew while we read
            raise UnreadableStateFile(path, f"more than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def decode_json(data: bytes, *, path: str | os.PathLike[str] = "<data>") -> Any:
    """Parse ``data`` as UTF-8 JSON; any failure is ``UnreadableStateFile`` (a ``ValueError``).

    Deep nesting is caught where the parser meets the interpreter's recursion limit (CPython's
    parser is C and checks it), so no ``RecursionError`` escapes.
    """
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnreadableStateFile(path, "not UTF-8 text") from None
    except RecursionError:
        raise UnreadableStateFile(path, "JSON nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError, and int-string conversion limits
        raise UnreadableStateFile(path, f"not JSON ({exc})") from None


def _aside_name(path: Path, now: float) -> Path:
    """``<name>.corrupt-<UTC time>-<random>``: sorts by time, never collides in practice."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    return path.with_name(f"{path.name}.corrupt-{stamp}-{secrets.token_hex(3)}")


def keep_aside(path: str | os.PathLike[str]) -> Path:
    """Rename the file (whatever it is: FIFO, directory, link) out of the way; return where.

    Never replaces an existing name: a fresh random name is tried when one is taken.

    Raises:
        OSError: it could not be renamed (it is left where it was).
    """
    source = Path(path)
    is_dir = stat.S_ISDIR(os.lstat(source).st_mode)  # the link itself, not what it names
    for _ in range(_ASIDE_ATTEMPTS):
        target = _aside_name(source, time.time())
        if sys.platform != "win32" and hasattr(os, "link") and not is_dir:
            # link + unlink never replaces an existing name, even in a race (EEXIST instead);
            # a directory cannot be linked.
            try:
                os.link(source, target, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError:
                pass  # no hard links here (some filesystems, protected_hardlinks): rename
            else:
                os.unlink(source)
                return target
        if os.path.lexists(target):
            continue
        # rename would replace a target created since the check; the callers hold their
        # directory's lock and the name has 24 random bits, so that needs a hostile writer
        # in our own private directory.
        os.rename(source, target)
        return target
    raise FileExistsError(
        errno.EEXIST, f"no free name to keep {source} aside after {_ASIDE_ATTEMPTS} tries"
    )


def check_private_directory(
    path: str | os.PathLike[str], *, create: bool = True, follow_symlinks: bool = True
) -> Path:
    """Make sure ``path`` is a directory only this user can write; create it 0700 if missing.

    Args:
        path: the directory.
        create: create it (and missing parents) with mode 0700 when it does not exist.
        follow_symlinks: False refuses a symlink in its place (for a directory in a shared
            parent such as ``/tmp``, where anyone may plant one).

    Returns:
        The directory as a ``Path``.

    Raises:
        UnsafeDirectory: it cannot be created, is not a directory, belongs to another user, or
            is group- or world-writable.
    """
    directory = Path(path)
    if create:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            pass  # a non-directory there: said below
        except OSError as exc:
            raise UnsafeDirectory(
                directory, f"cannot create directory {directory}: {exc.strerror or exc}"
            ) from exc
    try:
        info = directory.stat() if follow_symlinks else directory.lstat()
    except FileNotFoundError as exc:
        raise UnsafeDirectory(directory, f"directory {directory} does not exist") from exc
    except OSError as exc:
        raise UnsafeDirectory(
            directory, f"cannot use directory {directory}: {exc.strerror or exc}"
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(directory, f"{directory} is {_kind(info.st_mode)}, not a directory")
    if sys.platform == "win32":  # pragma: no cover - no POSIX owners or mode bits
        return directory
    if info.st_uid != os.getuid():
        raise UnsafeDirectory(
            directory,
            f"directory {directory} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.getuid()}); use a directory of your own",
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeDirectory(
            directory,
            f"directory {directory} is group- or world-writable "
            f"(mode {stat.S_IMODE(info.st_mode):o}); run chmod 700 on it or use another",
        )
    return directory
