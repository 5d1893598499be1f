"""Where the registry lives: the default directory, and the check that it is private. I/O.

Invariants:
    * ``default_directory`` only computes a path (from the environment and the platform); it
      creates and checks nothing.
    * ``registry_directory`` returns a directory only once it exists and is private: this
      user's, not writable by group or others (``statefile.check_private_directory``), wherever
      the path came from (an argument, ``$PORTLEASE_DIR``, the default). A missing one is
      created 0700. At a default location (a shared parent such as /tmp) a symlink in its place
      is refused too. Anything else is a ``RegistryError`` naming the directory and the fix.
      With ``create=False`` nothing is created: a missing directory is a ``RegistryError``.

Not guaranteed: the directory's parents are not checked (a parent another user may rename
entries in defeats the check), and nothing stops the directory from changing after the check.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from portlease.errors import RegistryError
from statefiles import UnsafeDirectory, check_private_directory

__all__ = ["default_directory", "registry_directory"]


def default_directory() -> Path:
    """The registry directory used when none is given.

    ``$PORTLEASE_DIR`` if set; else on Linux and other POSIX systems
    ``$XDG_RUNTIME_DIR/portlease`` (a per-user tmpfs), falling back to
    ``/dev/shm/portlease-<uid>`` (a tmpfs; checked like any shared parent), then
    ``<tempdir>/portlease-<uid>``; on macOS ``$TMPDIR/portlease`` (per-user there), falling back to
    ``~/Library/Caches/portlease``; on Windows ``%LOCALAPPDATA%\\portlease``.
    """
    explicit = os.environ.get("PORTLEASE_DIR")
    if explicit:
        return Path(explicit)
    if sys.platform == "win32":  # pragma: no cover - Windows only
        base = os.environ.get("LOCALAPPDATA")
        if base:
            return Path(base) / "portlease"
        user = os.environ.get("USERNAME") or "user"
        return Path(tempfile.gettempdir()) / f"portlease-{user}"
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        tmpdir = os.environ.get("TMPDIR")
        if tmpdir:
            return Path(tmpdir) / "portlease"
        return Path.home() / "Library" / "Caches" / "portlease"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "portlease"
    # Without a runtime dir (containers, CI, ssh without logind) prefer the tmpfs in /dev/shm:
    # replacing a file over an existing one on ext4 costs ~1.2 ms (auto_da_alloc flushes the
    # new data), ~10x a whole lease on tmpfs, and the lease file needs no durability.
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):  # noqa: S108
        return Path("/dev/shm") / f"portlease-{os.getuid()}"  # noqa: S108
    return Path(tempfile.gettempdir()) / f"portlease-{os.getuid()}"


def registry_directory(directory: str | os.PathLike[str] | None, *, create: bool = True) -> Path:
    """The registry directory to use for ``directory`` (``None``: the default), made ready.

    ``create=False`` never creates anything (``portlease ls``/``gc`` only look): a missing
    directory is then a ``RegistryError`` saying it does not exist.

    Raises:
        RegistryError: it cannot be created (or is missing, with ``create=False``), is not a
            directory, or is unsafe.
    """
    from_env = directory is None and bool(os.environ.get("PORTLEASE_DIR"))
    shared = directory is None and not from_env
    path = Path(directory) if directory is not None else default_directory()
    _prepare_directory(path, shared_parent=shared, from_env=from_env, create=create)
    return path


def _prepare_directory(
    path: Path, *, shared_parent: bool, from_env: bool, create: bool = True
) -> None:
    """Create ``path`` 0700 when missing; check it is a directory private to this user.

    Wherever the path came from, refuse a directory owned by someone else or one that group or
    others may write (anyone who can write there can swap the lease file). With
    ``shared_parent`` (a default location, possibly in a world-writable /tmp) also refuse a
    symlink in its place.

    Raises:
        RegistryError: it cannot be created, is not a directory, or is unsafe.
    """
    try:
        check_private_directory(path, create=create, follow_symlinks=not shared_parent)
    except UnsafeDirectory as exc:
        if shared_parent:
            hint = " (or set PORTLEASE_DIR to a private directory)"
        elif from_env:
            hint = " (it comes from $PORTLEASE_DIR: point that at a private directory)"
        else:
            hint = ""  # the caller chose it: the message says what to do
        raise RegistryError(f"unusable registry directory: {exc.message}{hint}", str(path)) from exc
