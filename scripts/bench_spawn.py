"""What starting a login's child process costs, beside a bare interpreter start.

Measures, in the same run:
  - bare:    spawn `python -c pass` and wait for it (the floor of any fresh interpreter)
  - import:  spawn `python -c "import runner._child._login"` (what a child loads: mcp, uvicorn)
  - ready:   the real path, for each start method ("spawn": `python -m runner._child._login`
             with the socket and channel in pass_fds; "zygote": forked by the pre-loaded
             runner._child._zygote): lease a port, start the child, send StartLogin, time until
             ServerReady arrives
  - ready x8: eight children started at once, time until the last ServerReady
  - zygote:  starting the zygote itself (paid once per authorize_many call)
  - memory:  a ready child's RSS and USS (what it alone costs: the zygote's children
             share the imported modules copy-on-write)

Usage: python scripts/bench_spawn.py [--rounds N]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import psutil

from portlease import Registry
from runner._core._messages import StartLogin
from runner._parent._child_lifetime import start_child
from runner._parent._launch import Launcher, Zygote, open_launcher


def run_python(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


async def one_child(
    registry: Registry, launcher: Launcher, memory: list[tuple[float, float]] | None = None
) -> float:
    with registry.acquire(owner="bench-spawn") as lease:
        started = time.perf_counter()
        first = functools.partial(
            StartLogin,
            name="bench",
            server_url="http://127.0.0.1:9/mcp",  # never reached: we stop at ready
            redirect_host=lease.host,
            redirect_port=lease.port,
            callback_path="/callback",
            scope=None,
            client_id=None,
            client_secret=None,
            client_name="bench",
            time_left=30,
            configured_timeout=30,
            interactive=True,
        )
        async with start_child(launcher, lease.socket, first) as child:
            elapsed = time.perf_counter() - started  # entered: ServerReady has arrived
            if memory is not None:
                info = psutil.Process(child.process.pid).memory_full_info()
                memory.append((info.rss / 2**20, info.uss / 2**20))
            return elapsed


async def many_children(registry: Registry, launcher: Launcher, count: int) -> float:
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one_child, registry, launcher)
    return time.perf_counter() - started


async def zygote_start() -> float:
    started = time.perf_counter()
    async with open_launcher("zygote") as launcher:
        assert isinstance(launcher, Zygote)
        await launcher._ready.wait()
        return time.perf_counter() - started


def summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:7.1f} ms   max {max(samples) * 1000:7.1f} ms"


async def main(rounds: int) -> None:
    rows: list[tuple[str, list[float]]] = []
    footprints: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp))
        rows.append(
            ("bare interpreter (python -c pass)", [run_python("pass") for _ in range(rounds)])
        )
        rows.append(
            (
                "import runner._child._login (mcp, uvicorn)",
                [run_python("import runner._child._login") for _ in range(rounds)],
            )
        )
        for method in ("spawn", "zygote"):
            memory: list[tuple[float, float]] = []
            async with open_launcher(method) as launcher:  # type: ignore[arg-type]
                ready = [await one_child(registry, launcher, memory) for _ in range(rounds)]
                eight = [
                    await many_children(registry, launcher, 8) for _ in range(max(1, rounds // 2))
                ]
            rows.append((f"{method}: child started -> ServerReady", ready))
            rows.append((f"{method}: 8 at once -> last ServerReady", eight))
            rss = statistics.median(m[0] for m in memory)
            uss = statistics.median(m[1] for m in memory)
            footprints.append(
                f"{method}: a ready child uses {rss:.0f} MiB RSS, {uss:.0f} MiB of its own (USS)"
            )
        rows.append(
            (
                "zygote: start, imports done (once per call)",
                [await zygote_start() for _ in range(rounds)],
            )
        )
    for label, samples in rows:
        print(f"{label:<46} {summary(samples)}")
    print("\n".join(["", *footprints]))
    medians = {label: statistics.median(samples) for label, samples in rows}
    spawn = medians["spawn: child started -> ServerReady"]
    zygote = medians["zygote: child started -> ServerReady"]
    print(
        f"\nzygote child start is {spawn / zygote:.0f}x faster than spawn "
        f"({zygote * 1000:.0f} ms vs {spawn * 1000:.0f} ms); "
        f"8 at once: {medians['zygote: 8 at once -> last ServerReady'] * 1000:.0f} ms vs "
        f"{medians['spawn: 8 at once -> last ServerReady'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    anyio.run(main, parser.parse_args().rounds)
