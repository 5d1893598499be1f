"""Many processes lease and release against ONE registry directory; nothing is lost or doubled.

Designed for pytest-xdist: every worker runs this test against the same directory (under the
run's common base temp), each with several plain child processes, and the pytest process itself
leases too. Each hold is logged as (pid, port, acquired, released) on the shared monotonic clock
(CLOCK_MONOTONIC is one clock for all processes of the machine). Each worker writes its log to
the shared directory before it checks, then checks every log present: of any two workers, the
one that checks later sees both logs, so every pair of holds is compared by someone.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest

from portlease import Registry
from portlease.records import decode_table

from support.xdist import shared_directory

PROCESSES = 4
ITERATIONS = 40
#: Every HOT_EVERY-th iteration asks for the worker's one fixed port (queueing, FCFS path);
#: the others ask for any port (port=0 path).
HOT_EVERY = 4

WORKER = """
import json, os, sys, time
from portlease import Registry
from portlease._procs import LivenessProbe
from portlease.records import decode_table

def check_held(reg, lease):
    table = decode_table(reg.lease_file.read_bytes())
    mine = [r for r in table.leases if r.id == lease.id]
    assert len(mine) == 1, f"own record found {len(mine)} times"
    assert mine[0] == lease.record, "own record differs"
    probe = LivenessProbe()
    rivals = [
        r for r in table.leases
        if r.port == lease.port and r.id != lease.id and not lease_is_stale(r, probe)
    ]
    assert not rivals, f"live records also claim port {lease.port}: {rivals}"

def check_released(reg, lease_id):
    table = decode_table(reg.lease_file.read_bytes())
    assert all(r.id != lease_id for r in table.leases), "record left after release"

def run(directory, iterations, hot_port, hot_every, out):
    reg = Registry(directory)
    for i in range(iterations):
        port = hot_port if i % hot_every == hot_every - 1 else 0
        lease = reg.acquire(f"stress-{os.getpid()}", port=port, wait=40.0)
        acquired = time.monotonic()
        check_held(reg, lease)
        released = time.monotonic()
        lease.release()
        check_released(reg, lease.id)
        out.append({"pid": os.getpid(), "asked": port, "port": lease.port,
                    "acq": acquired, "rel": released})

if __name__ == "__main__":
    holds = []
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), holds)
    print(json.dumps(holds), flush=True)
"""


def overlapping(holds: list[dict[str, float]]) -> list[tuple[dict[str, float], dict[str, float]]]:
    by_port: dict[int, list[dict[str, float]]] = defaultdict(list)
    for hold in holds:
        by_port[int(hold["port"])].append(hold)
    clashes = []
    for same_port in by_port.values():
        same_port.sort(key=lambda h: h["acq"])
        for before, after in itertools.pairwise(same_port):
            if after["acq"] < before["rel"]:
                clashes.append((before, after))
    return clashes


#: Several rounds so that xdist hands one to every worker (-n 2, -n 3) and they overlap in time.
@pytest.mark.parametrize("round_", range(3))
def test_concurrent_leases_never_overlap_or_get_lost(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, round_: int
) -> None:
    directory = shared_directory(tmp_path_factory, "shared-registry")
    registry = Registry(directory)
    with registry.acquire("stress-hot-port") as probe:
        hot_port = probe.port
    script = tmp_path / "stress_worker.py"
    script.write_text(textwrap.dedent(WORKER))
    args = [str(directory), str(ITERATIONS), str(hot_port), str(HOT_EVERY)]
    children = [
        subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    holds: list[dict[str, float]] = []
    try:
        namespace: dict[str, object] = {"__name__": "stress_worker_in_process"}
        exec(compile(textwrap.dedent(WORKER), str(script), "exec"), namespace)
        run = namespace["run"]
        run(str(directory), ITERATIONS, hot_port, HOT_EVERY, holds)  # type: ignore[operator]
        for proc in children:
            out, _ = proc.communicate(timeout=50)
            assert proc.returncode == 0, f"stress child {proc.pid} failed"
            holds.extend(json.loads(out))
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()

    pids = {os.getpid(), *(proc.pid for proc in children)}
    assert len(holds) == ITERATIONS * (PROCESSES + 1)
    # Every request for the fixed port got it. (A port=0 request may get the same number
    # from the kernel while nobody holds it, so holds are counted by what was asked.)
    hot = [h for h in holds if h["asked"] == hot_port]
    assert len(hot) == (ITERATIONS // HOT_EVERY) * (PROCESSES + 1)
    assert all(h["port"] == hot_port for h in hot)
    assert overlapping(holds) == []

    # No lost or phantom records of our processes: the file parses and names none of them.
    table = decode_table((directory / "leases.json").read_bytes())
    assert [r for r in table.leases if r.pid in pids] == []
    assert [w for w in table.waiters if w.pid in pids] == []
    assert [r for r in registry.list(stale=True) if r.pid in pids] == []

    # Compare with the other workers' holds that are already logged.
    log = directory / f"holds-{os.getpid()}-{time.monotonic_ns()}.json"
    log.write_text(json.dumps(holds))
    everyone: list[dict[str, float]] = []
    for other in directory.glob("holds-*.json"):
        everyone.extend(json.loads(other.read_text()))
    assert overlapping(everyone) == []
