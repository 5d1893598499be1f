"""What a restart costs: N stored logins used again, beside a first login of the same N.

Measures, in the same run, for N = 4 and 8 against the sandbox (each round a fresh sandbox,
token store and lease registry):
  - first:       a first login of N servers (the baseline: leases, a zygote, N children,
                 N browser consents)
  - valid:       authorize_many again with N valid stored logins (the fast path: answered
                 from the store in the parent)
  - refreshable: again, with every stored access token expired (``expires_at`` rewritten)
                 and its refresh token good: refreshed in the parent

For each: the median wall time over the rounds, the child processes started (descendants
of this process seen by a psutil watcher polling every 2 ms: the zygote and the login
children), the port leases taken (a counting registry), and the grants the sandbox served.

Usage: python scripts/bench_restart.py [--rounds N] [--servers 4 8]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil

from portlease import Registry
from runner import FlowResult, TokenStore, authorize_many
from runner.sandbox import Sandbox


class CountingRegistry(Registry):
    """A registry that counts the leases it hands out."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.leases = 0
        self._count_lock = threading.Lock()

    def acquire(self, owner: str, **kwargs: Any) -> Any:
        with self._count_lock:
            self.leases += 1
        return super().acquire(owner, **kwargs)


@contextlib.contextmanager
def watching_children() -> Iterator[set[int]]:
    """The pids of every descendant seen while the block runs."""
    seen: set[int] = set()
    stop = threading.Event()
    me = psutil.Process()

    def poll() -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                seen.update(p.pid for p in me.children(recursive=True))
            if stop.wait(0.002):
                return

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


@dataclass
class Scenario:
    times: list[float] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    leases: list[int] = field(default_factory=list)
    grants: list[dict[str, int]] = field(default_factory=list)


async def _nothing() -> Any:
    return
    yield


async def measure(
    sandbox: Sandbox, tokens: Path, leases: Path, into: Scenario
) -> dict[str, FlowResult]:
    registry = CountingRegistry(leases)
    before = {s.name: dict(sandbox.grant_counts(s.name)) for s in sandbox.servers}
    with watching_children() as seen:
        started = time.perf_counter()
        results = await authorize_many(
            sandbox.config(),
            store=TokenStore(tokens),
            registry=registry,
            timeout=120,
            browser=sandbox.browser,
            pastes=_nothing(),
            progress=lambda event: None,
        )
        elapsed = time.perf_counter() - started
    failed = {name: str(r.error) for name, r in results.items() if not r.ok}
    if failed:
        raise SystemExit(f"logins failed: {failed}")
    grants = {"authorize": 0, "authorization_code": 0, "refresh_token": 0}
    for server in sandbox.servers:
        for key, value in sandbox.grant_counts(server.name).items():
            grants[key] += value - before[server.name][key]
    into.times.append(elapsed)
    into.children.append(len(seen))
    into.leases.append(registry.leases)
    into.grants.append(grants)
    return results


def expire_all(tokens: Path, names: list[str]) -> None:
    store = TokenStore(tokens)
    for name in names:
        stored = store.load(name)
        assert stored is not None
        stored.expires_at = 1.0
        store.save(name, stored)


async def bench(servers: int, rounds: int) -> Mapping[str, Scenario]:
    scenarios = {"first": Scenario(), "valid": Scenario(), "refreshable": Scenario()}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp, Sandbox(servers=servers) as sandbox:
            tokens, leases = Path(tmp) / "tokens", Path(tmp) / "leases"
            await measure(sandbox, tokens, leases, scenarios["first"])
            await measure(sandbox, tokens, leases, scenarios["valid"])
            expire_all(tokens, [s.name for s in sandbox.servers])
            await measure(sandbox, tokens, leases, scenarios["refreshable"])
    return scenarios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    print(f"{args.rounds} rounds each; wall time median (min-max); per call: children started,")
    print("leases taken, grants served (authorize / authorization_code / refresh_token)\n")
    header = f"{'N':>3} {'call':<12} {'median':>10} {'range':>19} {'children':>9} {'leases':>7}"
    print(f"{header}  grants")
    for servers in args.servers:
        scenarios = anyio.run(bench, servers, args.rounds)
        for label, scenario in scenarios.items():
            ms = [t * 1000 for t in scenario.times]
            grants = scenario.grants[-1]
            print(
                f"{servers:>3} {label:<12} {statistics.median(ms):>8.1f} ms "
                f"{min(ms):>8.1f}-{max(ms):>7.1f} ms {max(scenario.children):>9} "
                f"{max(scenario.leases):>7}  {grants['authorize']} / "
                f"{grants['authorization_code']} / {grants['refresh_token']}"
            )


if __name__ == "__main__":
    main()
