"""Stress: rounds of many concurrent logins against the sandbox, checking for leaks.

Each round runs authorize_many over N sandbox servers (real children, leases and
callbacks), then checks every login succeeded on a distinct port with a token of its own
server, that no child process and no lease is left, and that the parent's open file
descriptors and threads did not grow across rounds. Both start methods run in the same
invocation, so the zygote's figures have the spawn baseline beside them.

Usage: python scripts/stress_flows.py [--servers 32] [--rounds 3]
Only loopback; bounded rounds; exits non-zero on any failed check.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio
import psutil

from portlease import Registry
from runner import TokenStore, authorize_many
from runner.sandbox import Sandbox


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def leftover_children() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True)]


async def no_pastes():  # type: ignore[no-untyped-def]
    return
    yield


async def one_round(sandbox: Sandbox, tmp: Path, method: str) -> tuple[float, list[str]]:
    problems: list[str] = []
    registry = Registry(tmp / "leases")
    started = time.perf_counter()
    results = await authorize_many(
        sandbox.config(),
        store=TokenStore(tmp / "tokens"),
        registry=registry,
        timeout=120,
        browser=sandbox.browser,
        pastes=no_pastes(),
        start_method=method,  # type: ignore[arg-type]
    )
    elapsed = time.perf_counter() - started
    failed = [f"{n}: {r.error}" for n, r in results.items() if not r.ok]
    problems += failed
    ports = [r.port for r in results.values()]
    if len(set(ports)) != len(ports):
        problems.append(f"ports handed out twice: {ports}")
    for name, result in results.items():
        if result.tokens and result.tokens.access_token not in sandbox.issued_tokens(name):
            problems.append(f"{name} got a token its server did not issue")
    if leftover_children():
        problems.append(f"children left: {leftover_children()}")
    if registry.list(stale=True):
        problems.append(f"leases left: {registry.list(stale=True)}")
    for path in (tmp / "tokens").glob("*.json"):
        path.unlink()  # next round logs in through the browser again
    return elapsed, problems


async def main(servers: int, rounds: int) -> int:
    failures = 0
    summary = []
    with Sandbox(servers=servers) as sandbox, tempfile.TemporaryDirectory() as tmp:
        for method in ("spawn", "zygote"):
            times = []
            baseline: tuple[int, int] | None = None
            for index in range(rounds):
                elapsed, problems = await one_round(sandbox, Path(tmp), method)
                times.append(elapsed)
                status = "ok" if not problems else "FAILED: " + "; ".join(problems)
                failures += bool(problems)
                print(
                    f"{method:<7} round {index + 1}/{rounds}: {servers} logins in "
                    f"{elapsed:6.2f} s  {status}",
                    flush=True,
                )
                # After the first round (warm-up: anyio's worker threads stay cached for
                # reuse), open fds and threads must not grow from round to round.
                now = (open_fds(), threading.active_count())
                if baseline is None:
                    baseline = now
                elif now[0] > baseline[0] or now[1] > baseline[1]:
                    failures += 1
                    print(f"{method}: LEAK: fds/threads {baseline} -> {now}", flush=True)
            summary.append((method, statistics.median(times)))
    print()
    for method, median in summary:
        print(
            f"{method:<7} median {median:6.2f} s for {servers} concurrent logins "
            f"({median / servers * 1000:.0f} ms per login)"
        )
    spawn, zygote = summary[0][1], summary[1][1]
    print(f"zygote vs spawn: {spawn / zygote:.1f}x faster")
    print("all checks passed" if not failures else f"{failures} check(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.servers, args.rounds))
