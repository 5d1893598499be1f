"""portlease: loopback ports leased without a race, recorded for every cooperating process.

::

    from portlease import Registry

    reg = Registry()                                   # or Registry("/some/dir")
    with reg.acquire(owner="linear", meta={"url": "https://mcp.example/"}) as lease:
        lease.socket                                   # bound and listening already
        lease.url("/callback")                         # "http://127.0.0.1:PORT/callback"
    reg.list()                                         # live leases; list(stale=True): all
    reg.prune()                                        # remove stale leases, return them

Guarantees:
    * ``acquire`` returns a socket that is bound *and listening* before the port is written
      anywhere, so there is no gap between choosing a port and holding it (no bind(0)+close+bind
      race); serve on that same socket.
    * No two live leases of cooperating processes hold the same port at the same time; a fixed
      port held by another live lease is handed over first come, first served among waiters.
    * Every change to the lease file is an atomic read-modify-replace under an exclusive lock;
      no update is lost under concurrency, and a reader never sees a half-written file.
    * A lease whose processes all died (SIGKILL included) is recognised as stale (pid plus start
      time, so a reused pid is not mistaken for the owner) and pruned on the next write.
    * Whatever stands where the lease file should never blocks or crashes a registry
      operation: the file is opened without following a symlink and without blocking (a FIFO),
      and anything that is not a regular file of at most 4 MiB (``MAX_LEASE_FILE``) holding a
      valid lease table (a directory, a symlink, a huge sparse file, garbage, JSON nested a
      million deep, fields of the wrong type) is moved aside, kept as
      ``leases.json.corrupt-<time>-<random>`` (never deleted or overwritten), and reported with
      a ``PortleaseWarning``; work goes on with an empty table. ``decode_table`` raises only
      ``ValueError``, for any bytes.
    * The registry directory must be private, wherever it came from (``Registry(dir)``,
      ``$PORTLEASE_DIR``, ``portlease ls --dir``, the default): owned by this user and not
      writable by group or others, else ``RegistryError`` naming it and the fix; a missing one
      is created 0700. At a default location (a shared parent such as /tmp) a symlink in its
      place is refused too.
    * ``portlease ls`` and ``gc`` never print a traceback: exit 1 with one
      ``portlease: error: ...`` line where they cannot go on, a ``portlease: warning: ...`` line
      for a lease file kept aside.

Limits:
    * Local filesystem only: the lock is an advisory ``flock``/``LockFileEx`` lock; on network
      filesystems it may not exclude other machines, and records name local pids anyway.
    * One user's cooperating processes: processes that ignore the registry are only detected
      (``PortBusy``), not prevented. Only the registry directory itself is checked, not its
      parents (a parent that another user can rename entries in defeats the check).
    * Loopback only: ``127.0.0.1``, ``::1`` and ``localhost`` (bound as 127.0.0.1); anything
      else raises ``InvalidHost``.
    * Liveness is judged from the OS process table: processes in another pid namespace
      (containers) sharing the directory look dead to each other.
    * ``meta`` is stored in clear text in the lease file: never put secrets there.
"""

from __future__ import annotations

import logging

from portlease.errors import (
    InvalidHost,
    InvalidRequest,
    LeaseClosed,
    LeaseTimeout,
    PortBusy,
    PortleaseError,
    PortleaseWarning,
    RegistryError,
)
from portlease.lease import Lease
from portlease.location import default_directory
from portlease.records import LeaseRecord
from portlease.registry import Registry

__all__ = [
    "InvalidHost",
    "InvalidRequest",
    "Lease",
    "LeaseClosed",
    "LeaseRecord",
    "LeaseTimeout",
    "PortBusy",
    "PortleaseError",
    "PortleaseWarning",
    "Registry",
    "RegistryError",
    "default_directory",
]

# Library logging convention: applications decide where "portlease" records go; without this,
# Python's last-resort handler would print every warning a second time next to warnings.warn.
logging.getLogger("portlease").addHandler(logging.NullHandler())
