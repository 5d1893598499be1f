"""Large port sets: how fast a refusal comes, and whether set waiters starve other acquires.

Usage: python scripts/bench_port_sets.py [--ports 1024] [--waiters 30] [--samples 40]

Scenarios (each bounded; the whole run takes well under a minute):
  (a) refusal: ``--ports`` loopback ports bound and listening by plain sockets of this process
      (no lease), then ``acquire(port=<that set>)``: wall time and the length of the
      ``PortBusy`` message.
  (b) starvation: one process leases ``--ports`` ports; ``--waiters`` processes each wait for
      that set (``wait=`` long enough to outlast the measurement); meanwhile this process
      times ``acquire(port=0)`` + ``release`` ``--samples`` times: p50 / p99 / max, beside the
      same loop with no waiters.

Run it from the repository root (or with the package installed); it prints its own baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from portlease import PortBusy, Registry, RegistryError

_WAITER = """
import json, sys
from portlease import Registry, LeaseTimeout
reg = Registry(sys.argv[1])
ports = json.loads(sys.argv[2])
print("ready", flush=True)
try:
    reg.acquire("waiter", port=set(ports), wait=float(sys.argv[3])).release()
except LeaseTimeout:
    pass
"""


def refusal(count: int) -> None:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            sockets.append(sock)
        ports = {s.getsockname()[1] for s in sockets}
        with tempfile.TemporaryDirectory() as directory:
            registry = Registry(directory)
            start = time.perf_counter()
            try:
                registry.acquire("bench", port=ports).release()
            except PortBusy as exc:
                took = time.perf_counter() - start
                print(f"(a) {count} foreign ports: PortBusy after {took:.3f} s, ")
                print(f"    message {len(str(exc))} characters: {str(exc)[:160]}...")
            else:
                print("(a) unexpected: a port of the set was leased")
    finally:
        for sock in sockets:
            sock.close()


def _latencies(registry: Registry, samples: int) -> list[float]:
    """Milliseconds per acquire+release; a lock timeout (``RegistryError``) counts as its wait."""
    taken: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        try:
            registry.acquire("probe", port=0).release()
        except RegistryError as exc:
            print(f"    acquire(port=0) failed: {exc}")
        taken.append((time.perf_counter() - start) * 1000)
    return taken


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms, max {ordered[-1]:.2f} ms"


def starvation(count: int, waiters: int, samples: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        holder = Registry(directory)
        leases = [holder.acquire("holder", port=0) for _ in range(count)]
        ports = sorted(lease.port for lease in leases)
        registry = Registry(directory)
        print(f"(b) no waiters: acquire(port=0)+release {_summary(_latencies(registry, samples))}")
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or root}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WAITER, directory, json.dumps(ports), "120"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            for _ in range(waiters)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                proc.stdout.readline()  # "ready": it is about to call acquire
            # Until every waiter has queued (bounded: the waiters' own deadline is far off).
            queued: set[int] = set()
            for _ in range(600):
                try:
                    with holder._file.locked() as table:
                        queued = {w.pid for w in table.waiters}
                except RegistryError as exc:
                    print(f"    reading the lease file failed: {exc}")
                    continue
                if len(queued) >= waiters:
                    break
                time.sleep(0.05)
            size = (Path(directory) / "leases.json").stat().st_size
            print(f"    {len(queued)} waiters queued; lease file {size} bytes")
            print(
                f"(b) {waiters} set waiters: acquire(port=0)+release "
                f"{_summary(_latencies(registry, samples))}"
            )
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            for lease in leases:
                lease.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=1024)
    parser.add_argument("--waiters", type=int, default=30)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    refusal(args.ports)
    starvation(args.ports, args.waiters, args.samples)


if __name__ == "__main__":
    main()
