"""N concurrent logins through the runner, beside the bare SDK in-process, in one run.

For each N (default 1, 8, 32, 64), cold and warm, the same N logins against one sandbox
server (authorization server + MCP server, ``runner.sandbox``), which runs in a process of
its own (its CPU and memory are neither side's):

  - bare:    the MCP SDK alone in the host process, the way today's hosts log in: per
             login one ``OAuthClientProvider`` (in-memory token storage) and one loopback
             listener of its own (``asyncio.start_server``), ``asyncio.gather`` over them
  - runner:  ``authorize_many`` (a zygote, a leased port and a child process per login,
             tokens saved in a ``TokenStore``)

Each login on either side does the same protocol work (the runner child's
``runner._child._sdk.drive_login``): an MCP ``initialize`` POST through
``AsyncClient(auth=provider)``
whose 401 starts the SDK's flow: discovery, dynamic client registration, the consent (the
same stdlib browser function on both sides, in a daemon thread per login), the callback,
the code exchange; then the POST again with the token. See scripts/_bench_flows_worker.py.

  - cold: a fresh host process per measurement whose first call does the N logins: the call
          (after the imports), the imports themselves, and exec -> result (what a cold host
          pays in all)
  - warm: one host process per side and N that has already paid for everything once (its
          imports and one login; the runner side also a ``Runner`` entered and warmed up);
          then the N logins, timed in the host

Every round starts from nothing stored (fresh store and registry directories per process,
fresh server names per round) and is checked: every login ok, and on the runner side every
one through a child on a port; the sandbox served exactly N authorizations and N code
grants and no refresh. Memory is measured in a separate round per (N, mode, side): a
thread of this process samples the measured process and all its descendants (the runner's
zygote and login children) with psutil's ``memory_full_info`` (``smaps_rollup``) and keeps
the peak of the tree's summed RSS and PSS. Reading smaps is not free, so timed rounds run
without the watcher; its own cost is printed. CPU is the tree's user+system time.

Usage: python scripts/bench_flows.py [--sizes 1 8 32 64] [--rounds 3] [--quick] [--json FILE]
                                    [--bare-tls per-client|shared] [--timeout S] [--sample-ms MS]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

WORKER = Path(__file__).with_name("_bench_flows_worker.py")
SIDES = ("bare", "runner")
MODES = ("cold", "warm")
MIB = 2**20
TLS_NOTE = {
    "per-client": "built by each HTTP client (verify=True, as hosts do)",
    "shared": "shared by every HTTP client of the process (--bare-tls shared)",
}
PHASES = ("listening", "authorizing", "callback", "done")  # as in the worker
GRANTS = ("authorize", "authorization_code", "refresh_token")


class BenchError(Exception):
    """A worker failed, answered wrongly, or did not answer in time."""


# --- worker processes ----------------------------------------------------------------------


class Worker:
    """A process running scripts/_bench_flows_worker.py; its ``BENCH`` lines, in order."""

    def __init__(self, args: list[str], label: str) -> None:
        self.label = label
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self.pid = self.process.pid
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("BENCH "):
                self._lines.put(json.loads(line[6:]))
        self._lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        try:
            message = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.label}: no {event!r} within {timeout:g} s") from None
        if message is None:
            self._lines.put(None)
            raise BenchError(f"{self.label}: exited before {event!r}: {self.stderr_tail()}")
        if message.get("event") != event:
            raise BenchError(f"{self.label}: {message.get('event')!r} instead of {event!r}")
        return message

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stderr_tail(self, limit: int = 3000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:] or "(no stderr)"

    def stop(self, command: str | None, timeout: float = 15.0) -> int | None:
        """Ask it to stop (``command``, then end of stdin); kill it after ``timeout``."""
        with contextlib.suppress(OSError, ValueError):
            if command is not None:
                self.send(command)
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            return None
        finally:
            self._stderr.close()


class SandboxProcess:
    """The sandbox server in its own process."""

    def __init__(self, timeout: float) -> None:
        self.worker = Worker(["sandbox"], "sandbox")
        self.timeout = timeout
        ready = self.worker.expect("sandbox", timeout)
        self.url: str = ready["url"]
        self.port: int = ready["port"]

    def counts(self) -> dict[str, int]:
        self.worker.send("counts")
        return dict(self.worker.expect("counts", self.timeout)["counts"])

    def stop(self) -> None:
        self.worker.stop("stop")


# --- measuring a process tree --------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu(pid: int) -> float:
    """User+system seconds of the tree, with what each member has reaped of its children."""
    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


@dataclass
class TreeMemory:
    """What a ``TreeWatcher`` saw."""

    peak_rss: float = 0.0  # MiB, the largest sum over one sample
    peak_pss: float = 0.0
    first_pss: float = 0.0
    samples: int = 0
    sample_seconds: float = 0.0  # wall time spent sampling
    max_sample: float = 0.0
    cpu: float = 0.0  # CPU time of the watcher thread
    wall: float = 0.0
    max_procs: int = 0


class TreeWatcher:
    """Samples the RSS and PSS of a process and all its descendants from a thread."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.memory = TreeMemory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        began = time.perf_counter()
        rss = pss = 0
        procs = 0
        with contextlib.suppress(psutil.Error):
            for proc in _tree(self.pid):
                with contextlib.suppress(psutil.Error):
                    info = proc.memory_full_info()
                    rss += info.rss
                    pss += info.pss
                    procs += 1
        cost = time.perf_counter() - began
        m = self.memory
        if procs:
            if m.samples == 0:
                m.first_pss = pss / MIB
            m.samples += 1
            m.peak_rss = max(m.peak_rss, rss / MIB)
            m.peak_pss = max(m.peak_pss, pss / MIB)
            m.max_procs = max(m.max_procs, procs)
        m.sample_seconds += cost
        m.max_sample = max(m.max_sample, cost)

    def _run(self) -> None:
        cpu = time.thread_time()
        began = time.perf_counter()
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break
        self.memory.cpu = time.thread_time() - cpu
        self.memory.wall = time.perf_counter() - began

    def __enter__(self) -> TreeWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)


# --- one measurement -----------------------------------------------------------------------


@dataclass
class Measurement:
    """One round of N logins on one side."""

    side: str
    mode: str
    n: int
    wall: float
    per_login: list[float]
    cpu: float  # cold: the whole process (imports included); warm: the round
    phases: list[dict[str, float]]  # per login: when (s since the call) it reached a phase
    memory: TreeMemory | None = None
    cold: dict[str, float] = field(default_factory=dict)  # exec, interpreter, imports, ...


@dataclass
class Bench:
    sandbox: SandboxProcess
    rounds: int
    timeout: float
    interval: float
    scratch: Path
    bare_tls: str
    measurements: list[Measurement] = field(default_factory=list)

    def _fresh_dir(self) -> str:
        return tempfile.mkdtemp(prefix="run-", dir=self.scratch)

    def _worker_args(self, side: str, mode: str, n: int) -> list[str]:
        args = [side, mode] + ([str(n)] if mode == "cold" else [])
        return [
            *args,
            "--url",
            self.sandbox.url,
            "--sandbox-port",
            str(self.sandbox.port),
            "--dir",
            self._fresh_dir(),
            "--timeout",
            str(self.timeout),
            "--bare-tls",
            self.bare_tls,
        ]

    def _check(self, label: str, result: dict[str, Any], before: dict[str, int]) -> None:
        n = result["n"]
        if result["failed"]:
            raise BenchError(f"{label}: {len(result['failed'])} logins failed: {result['failed']}")
        if len(result["per_login"]) != n:
            raise BenchError(f"{label}: {len(result['per_login'])} results for {n} logins")
        after = self.sandbox.counts()
        served = {grant: after[grant] - before[grant] for grant in GRANTS}
        if served != {"authorize": n, "authorization_code": n, "refresh_token": 0}:
            raise BenchError(f"{label}: the sandbox served {served} for {n} logins")

    def cold(self, side: str, n: int, *, memory: bool) -> Measurement:
        label = f"{side} cold N={n}"
        before = self.sandbox.counts()
        spawned = time.monotonic()
        worker = Worker(self._worker_args(side, "cold", n), label)
        try:
            watcher = TreeWatcher(worker.pid, self.interval) if memory else None
            with watcher or contextlib.nullcontext():
                result = worker.expect("result", self.timeout + 60)
        finally:
            code = worker.stop(None)
        if code != 0:
            raise BenchError(f"{label}: exit status {code}: {worker.stderr_tail()}")
        self._check(label, result, before)
        found = Measurement(
            side,
            "cold",
            n,
            result["wall"],
            result["per_login"],
            result["cpu"],
            result["phases"],
            memory=watcher.memory if watcher else None,
            cold={
                "interpreter": result["started"] - spawned,
                "imports": result["imported"] - result["imports_started"],
                "imports_cpu": result["imports_cpu"],
                "exec_to_result": result["returned"] - spawned,
            },
        )
        self.measurements.append(found)
        return found

    def open_warm(self, side: str, n: int) -> Worker:
        worker = Worker(self._worker_args(side, "warm", n), f"{side} warm N={n}")
        try:
            ready = worker.expect("ready", self.timeout + 60)
            if ready["prime"]["failed"]:
                raise BenchError(f"{side} warm: the priming login failed: {ready['prime']}")
        except BaseException:
            worker.stop("quit")
            raise
        return worker

    def warm(self, worker: Worker, side: str, n: int, tag: str, *, memory: bool) -> Measurement:
        label = f"{side} warm N={n}"
        before = self.sandbox.counts()
        cpu = tree_cpu(worker.pid)
        watcher = TreeWatcher(worker.pid, self.interval) if memory else None
        with watcher or contextlib.nullcontext():
            worker.send(f"run {n} {tag}")
            result = worker.expect("result", self.timeout + 60)
        time.sleep(0.05)  # let the zygote reap the last children: their CPU counts then
        cpu = tree_cpu(worker.pid) - cpu
        self._check(label, result, before)
        found = Measurement(
            side,
            "warm",
            n,
            result["wall"],
            result["per_login"],
            cpu,
            result["phases"],
            memory=watcher.memory if watcher else None,
        )
        self.measurements.append(found)
        return found

    def size(self, n: int) -> None:
        for index in range(self.rounds):
            for side in SIDES if index % 2 == 0 else SIDES[::-1]:  # alternate who goes first
                self.cold(side, n, memory=False)
        for side in SIDES:
            self.cold(side, n, memory=True)
        workers: dict[str, Worker] = {}
        try:
            for side in SIDES:
                workers[side] = self.open_warm(side, n)
            for side in SIDES:
                self.warm(workers[side], side, n, "mem", memory=True)
            for index in range(self.rounds):
                for side in SIDES if index % 2 == 0 else SIDES[::-1]:
                    self.warm(workers[side], side, n, f"r{index}", memory=False)
        finally:
            for worker in workers.values():
                worker.stop("quit")

    def select(self, side: str, mode: str, n: int, *, memory: bool) -> list[Measurement]:
        return [
            m
            for m in self.measurements
            if (m.side, m.mode, m.n) == (side, mode, n) and (m.memory is not None) == memory
        ]


# --- reporting -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Cell:
    """One (side, mode, N): the timed rounds summarised, and the memory round."""

    wall: float
    wall_min: float
    wall_max: float
    p50: float
    p99: float
    cpu: float
    rss: float
    pss: float
    cold: dict[str, float]
    phases: dict[str, float]  # median over the logins of the timed rounds
    memory: TreeMemory


def summarise(bench: Bench, side: str, mode: str, n: int) -> Cell:
    timed = bench.select(side, mode, n, memory=False)
    (memory_round,) = bench.select(side, mode, n, memory=True)
    assert memory_round.memory is not None
    walls = [m.wall for m in timed]
    pooled = [t for m in timed for t in m.per_login]
    cold = {key: statistics.median(m.cold[key] for m in timed) for key in (timed[0].cold or {})}
    return Cell(
        wall=statistics.median(walls),
        wall_min=min(walls),
        wall_max=max(walls),
        p50=percentile(pooled, 0.50),
        p99=percentile(pooled, 0.99),
        cpu=statistics.median(m.cpu for m in timed),
        rss=memory_round.memory.peak_rss,
        pss=memory_round.memory.peak_pss,
        cold=cold,
        phases={
            phase: statistics.median(p[phase] for m in timed for p in m.phases if phase in p)
            for phase in PHASES
            if any(phase in p for m in timed for p in m.phases)
        },
        memory=memory_round.memory,
    )


def machine() -> dict[str, Any]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "mcp": version("mcp"),
        "httpx2": version("httpx2"),
        "httpx": version("httpx"),
        "uvicorn": version("uvicorn"),
        "psutil": psutil.__version__,
        "load_at_start": os.getloadavg(),
    }


def _walls(cell: Cell) -> str:
    return f"{cell.wall:5.2f} ({cell.wall_min:.2f}-{cell.wall_max:.2f})"


def _phases(cell: Cell) -> str:
    return "/".join(f"{cell.phases[p] * 1000:.0f}" if p in cell.phases else "?" for p in PHASES)


def _slope(cells: dict[int, Cell], sizes: list[int], n: int) -> str:
    index = sizes.index(n)
    if index == 0:
        return "-"
    previous = sizes[index - 1]
    return f"{(cells[n].pss - cells[previous].pss) / (n - previous):.1f}"


def report(bench: Bench, sizes: list[int]) -> tuple[list[str], dict[str, Any]]:
    cells = {
        (side, mode): {n: summarise(bench, side, mode, n) for n in sizes}
        for side in SIDES
        for mode in MODES
    }
    out: list[str] = []
    out.append(
        "wall: N logins, median of rounds (min-max), s; p50/p99: per login, pooled over rounds,"
    )
    out.append("ms; RSS/PSS: peak of the process tree in the memory round, MiB; PSS/login:")
    out.append("(PSS(N) - PSS(previous N)) / (N - previous N), MiB; CPU: the tree's, s (cold:")
    out.append("the whole process, imports included; warm: the round)\n")
    header = (
        f"{'N':>3} {'mode':<5}| {'bare wall':>17} {'runner wall':>17} {'ratio':>6} |"
        f" {'bare p50/p99':>13} {'runner p50/p99':>14} | {'bare RSS/PSS':>12}"
        f" {'runner RSS/PSS':>14} | {'PSS/login b/r':>13} | {'CPU b/r':>11}"
    )
    out.append(header)
    out.append("-" * len(header))
    for mode in MODES:
        for n in sizes:
            b, r = cells["bare", mode][n], cells["runner", mode][n]
            out.append(
                f"{n:>3} {mode:<5}| {_walls(b):>17} {_walls(r):>17} {r.wall / b.wall:5.2f}x |"
                f" {b.p50 * 1000:6.0f}/{b.p99 * 1000:<6.0f}"
                f" {r.p50 * 1000:7.0f}/{r.p99 * 1000:<6.0f} |"
                f" {b.rss:5.0f}/{b.pss:<6.0f} {r.rss:7.0f}/{r.pss:<6.0f} |"
                f" {_slope(cells['bare', mode], sizes, n):>6}/"
                f"{_slope(cells['runner', mode], sizes, n):<6} |"
                f" {b.cpu:5.2f}/{r.cpu:<5.2f}"
            )
    out.append("\ncold host process, medians, s: exec -> interpreter up (stdlib imported);")
    out.append("the side's imports (CPU); the call; exec -> result (what a cold host pays)\n")
    header = (
        f"{'N':>3} | {'interpreter b/r':>15} | {'imports b/r':>11} {'(CPU b/r)':>11} |"
        f" {'call b/r':>11} {'ratio':>6} | {'exec->result b/r':>16} {'ratio':>6}"
    )
    out.append(header)
    out.append("-" * len(header))
    for n in sizes:
        b, r = cells["bare", "cold"][n], cells["runner", "cold"][n]
        out.append(
            f"{n:>3} | {b.cold['interpreter']:7.2f}/{r.cold['interpreter']:<7.2f} |"
            f" {b.cold['imports']:5.2f}/{r.cold['imports']:<5.2f}"
            f" ({b.cold['imports_cpu']:4.2f}/{r.cold['imports_cpu']:4.2f}) |"
            f" {b.wall:5.2f}/{r.wall:<5.2f} {r.wall / b.wall:5.2f}x |"
            f" {b.cold['exec_to_result']:8.2f}/{r.cold['exec_to_result']:<7.2f}"
            f" {r.cold['exec_to_result'] / b.cold['exec_to_result']:5.2f}x"
        )
    out.append("\nwhere the time goes: median over logins of when (ms since the call) each")
    out.append("reached: listening (bare: its listener; runner: the child's ServerReady), the")
    out.append("authorization URL (after discovery and registration), the callback, done\n")
    header = (
        f"{'N':>3} {'mode':<5}| {'bare listen/authz/callback/done':>31} |"
        f" {'runner listen/authz/callback/done':>33}"
    )
    out.append(header)
    out.append("-" * len(header))
    for mode in MODES:
        for n in sizes:
            b, r = cells["bare", mode][n], cells["runner", mode][n]
            out.append(f"{n:>3} {mode:<5}| {_phases(b):>31} | {_phases(r):>33}")
    watchers = [c.memory for per_side in cells.values() for c in per_side.values()]
    samples = sum(w.samples for w in watchers)
    mean_cost = sum(w.sample_seconds for w in watchers) / max(1, samples)
    worst = max(w.max_sample for w in watchers)
    busiest = max(watchers, key=lambda w: w.cpu / max(w.wall, 1e-9))
    out.append(
        f"\nmemory sampling: every {bench.interval * 1000:g} ms plus the sample itself; one"
        f" sample of a tree took {mean_cost * 1000:.1f} ms on average (at most"
        f" {worst * 1000:.0f} ms, up to {max(w.max_procs for w in watchers)} processes);"
        f" the watcher used up to {busiest.cpu / max(busiest.wall, 1e-9):.0%} of a core,"
        " so memory rounds are not timed rounds"
    )
    out.append("\ntargets (runner / bare SDK, same run, same server):")
    out.extend(targets(cells, sizes))
    data = {
        "cells": {
            f"{side}/{mode}/{n}": {
                key: value for key, value in vars(cell).items() if key != "memory"
            }
            | {"memory": vars(cell.memory)}
            for (side, mode), per_n in cells.items()
            for n, cell in per_n.items()
        },
        "measurements": [
            {
                key: (vars(value) if isinstance(value, TreeMemory) else value)
                for key, value in vars(m).items()
            }
            for m in bench.measurements
        ],
    }
    return out, data


def targets(cells: dict[tuple[str, str], dict[int, Cell]], sizes: list[int]) -> Iterator[str]:
    def verdict(label: str, value: float, limit: float, unit: str) -> str:
        mark = "met" if value <= limit else "MISSED"
        bound = f"<= {limit:g}{unit}"
        return f"  {label:<52} {bound:>10} {f'{value:.2f}{unit}':>10}  {mark}"

    def ratio(mode: str, n: int, key: str | None = None) -> float:
        b, r = cells["bare", mode][n], cells["runner", mode][n]
        if key is None:
            return r.wall / b.wall
        return r.cold[key] / b.cold[key]

    if 1 in sizes:
        yield verdict("cold single login, from the call", ratio("cold", 1), 2.5, "x")
        yield verdict(
            "cold single login, exec -> result", ratio("cold", 1, "exec_to_result"), 2.5, "x"
        )
        yield verdict("warm single login", ratio("warm", 1), 1.3, "x")
    for n in (32, 64):
        if n in sizes:
            yield verdict(f"{n} concurrent logins, warm", ratio("warm", n), 1.3, "x")
            yield verdict(
                f"{n} concurrent logins, cold (from the call)", ratio("cold", n), 1.3, "x"
            )
    if len(sizes) > 1:
        low, high = sizes[0], sizes[-1]
        for mode in MODES:
            per = cells["runner", mode]
            bare = cells["bare", mode]
            slope = (per[high].pss - per[low].pss) / (high - low)
            bare_slope = (bare[high].pss - bare[low].pss) / (high - low)
            yield verdict(
                f"PSS per extra login, {mode}, N {low} -> {high} (bare {bare_slope:.1f})",
                slope,
                8,
                " MiB",
            )
    missing = [n for n in (1, 32, 64) if n not in sizes]
    if missing:
        yield f"  (not measured in this run: N = {', '.join(map(str, missing))})"


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per cell")
    parser.add_argument("--quick", action="store_true", help="sizes 1 8, one round: a smoke run")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--timeout", type=float, default=60.0, help="per login, s")
    parser.add_argument("--sample-ms", type=float, default=10.0, help="memory sampling period")
    parser.add_argument(
        "--bare-tls",
        choices=["per-client", "shared"],
        default="per-client",
        help="the bare side's HTTP clients: each builds its TLS context (as the SDK's own"
        " client and today's hosts do; default), or the process shares one (as the runner's"
        " children share the zygote's)",
    )
    args = parser.parse_args()
    sizes = [1, 8] if args.quick else sorted(set(args.sizes))
    rounds = 1 if args.quick else args.rounds
    if rounds < 1 or not sizes or sizes[0] < 1:
        parser.error("--rounds and --sizes must be positive")

    host = machine()
    print(
        f"{host['system']}; {host['cpu']}; {host['usable_cores']} of {host['cores']} cores;"
        f" {host['ram_gib']} GiB RAM; load {' '.join(f'{x:.2f}' for x in host['load_at_start'])}"
    )
    print(
        f"Python {host['python']}; mcp {host['mcp']}; httpx2 {host['httpx2']}; httpx"
        f" {host['httpx']}; uvicorn {host['uvicorn']}; psutil {host['psutil']}"
    )
    print(f"sizes {sizes}; {rounds} timed round(s) + 1 memory round per (N, mode, side)")
    print(f"bare side: a TLS context {TLS_NOTE[args.bare_tls]}\n")
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="bench-flows-"))
    sandbox = SandboxProcess(timeout=30)
    try:
        bench = Bench(sandbox, rounds, args.timeout, args.sample_ms / 1000, scratch, args.bare_tls)
        print(f"sandbox: one server in its own process (pid {sandbox.worker.pid}), {sandbox.url}")
        for n in sizes:
            print(f"  N={n} ...", flush=True)
            bench.size(n)
    except BenchError as exc:
        raise SystemExit(f"bench_flows: {exc}") from None
    finally:
        sandbox.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    lines, data = report(bench, sizes)
    print()
    print("\n".join(lines))
    load = os.getloadavg()
    print(
        f"\n{time.monotonic() - started:.0f} s in all; load at the end"
        f" {' '.join(f'{x:.2f}' for x in load)}"
    )
    if args.json is not None:
        host["load_at_end"] = load
        data["machine"] = host
        data["sizes"], data["rounds"], data["bare_tls"] = sizes, rounds, args.bare_tls
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
