"""Small private state files another process or a person may write: read safely, lock, keep aside.

A lease table (``portlease``), a token file (``runner``'s stores), a config file: a few
kilobytes of JSON in one user's directory, where anything may stand instead (a FIFO, a
directory, a symlink, a sparse file of gigabytes, JSON nested a million deep). Both packages
read, check and lock such files through this one small library; it imports neither.

>>> raw = read_state_file(path, limit=1 << 20)  # doctest: +SKIP
>>> data = decode_json(raw, path=path)  # doctest: +SKIP

- ``read_state_file``, ``decode_json``, ``UnreadableStateFile``: read bounded, without
  blocking on the file, and decode raising only ``UnreadableStateFile`` (``_reading``);
- ``keep_aside``: move an unreadable file out of the way, never deleting it;
- ``check_private_directory``, ``UnsafeDirectory``: refuse a directory others may write;
- ``lock_file``, ``unlock_file``: an exclusive ``flock`` on a separate lock file, waited for
  in a helper thread (``_locking``).

Each function's docstring says what it guarantees; limits: local file systems, one user's
cooperating processes (``flock`` is advisory), POSIX (Windows: the checks that apply).
"""

from __future__ import annotations

from statefiles._locking import lock_file, unlock_file
from statefiles._reading import (
    UnreadableStateFile,
    UnsafeDirectory,
    check_private_directory,
    decode_json,
    keep_aside,
    read_state_file,
)

__all__ = [
    "UnreadableStateFile",
    "UnsafeDirectory",
    "check_private_directory",
    "decode_json",
    "keep_aside",
    "lock_file",
    "read_state_file",
    "unlock_file",
]
