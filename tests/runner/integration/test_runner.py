"""``runner.Runner`` end to end: one zygote across calls, replaced when it dies, and no
process left when the block ends. Real sandbox servers, children, sockets and leases."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from portlease import Registry
from runner import FlowResult, Runner, TokenStore
from runner.sandbox import Sandbox

from support.logins import no_pastes

pytestmark = pytest.mark.anyio


def _zygotes() -> list[psutil.Process]:
    """This process's zygotes (its direct children running ``runner._child._zygote``)."""
    found = []
    for child in psutil.Process().children():
        try:
            if "runner._child._zygote" in child.cmdline():
                found.append(child)
        except psutil.Error:
            pass
    return found


def _descendants() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


def _runner(tmp_path: Path, **kwargs: Any) -> Runner:
    return Runner(
        store=TokenStore(tmp_path / "tokens"), registry=Registry(tmp_path / "leases"), **kwargs
    )


async def _login(runner: Runner, sandbox: Sandbox, names: list[str]) -> dict[str, FlowResult]:
    config = sandbox.config()
    return await runner.authorize_many(
        {name: config[name] for name in names},
        timeout=60,
        browser=sandbox.browser,
        pastes=no_pastes(),
    )


async def test_one_zygote_serves_every_call_and_is_gone_after_the_block(tmp_path: Path) -> None:
    with Sandbox(servers=3) as sandbox:
        async with _runner(tmp_path) as runner:
            first = await _login(runner, sandbox, ["sandbox-1"])
            assert first["sandbox-1"].ok, first["sandbox-1"].error
            zygotes = _zygotes()
            assert len(zygotes) == 1
            second = await _login(runner, sandbox, ["sandbox-2", "sandbox-3"])
            assert all(r.ok for r in second.values()), second
            assert [z.pid for z in _zygotes()] == [zygotes[0].pid]
            assert runner.zygotes_started == 1
        assert not _descendants()
        assert not zygotes[0].is_running()


async def test_a_call_answered_from_the_store_starts_no_zygote(tmp_path: Path) -> None:
    with Sandbox(servers=1) as sandbox:
        async with _runner(tmp_path) as runner:
            assert (await _login(runner, sandbox, ["sandbox-1"]))["sandbox-1"].ok
        async with _runner(tmp_path) as again:
            result = await _login(again, sandbox, ["sandbox-1"])
            assert result["sandbox-1"].ok, result["sandbox-1"].error
            assert again.zygotes_started == 0
            assert not _zygotes()


async def test_a_killed_zygote_is_replaced_at_the_next_login(tmp_path: Path) -> None:
    with Sandbox(servers=2) as sandbox:
        async with _runner(tmp_path) as runner:
            await runner.warm_up()
            (zygote,) = _zygotes()
            os.kill(zygote.pid, signal.SIGKILL)
            with anyio.fail_after(10):
                while zygote.is_running() and zygote.status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(0.01)  # bounded poll of an observable condition
            result = await _login(runner, sandbox, ["sandbox-1", "sandbox-2"])
            assert all(r.ok for r in result.values()), result
            assert runner.zygotes_started == 2
            assert [z.pid for z in _zygotes()] != [zygote.pid]
        assert not _descendants()


async def test_overlapping_calls_share_one_zygote(tmp_path: Path) -> None:
    with Sandbox(servers=4) as sandbox:
        async with _runner(tmp_path) as runner:
            results: list[dict[str, FlowResult]] = []

            async def call(names: list[str]) -> None:
                results.append(await _login(runner, sandbox, names))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, ["sandbox-1", "sandbox-2"])
                tg.start_soon(call, ["sandbox-3"])
                tg.start_soon(call, ["sandbox-4"])
            assert sorted(name for r in results for name in r) == [
                f"sandbox-{i}" for i in range(1, 5)
            ]
            assert all(r.ok for call in results for r in call.values()), results
            assert runner.zygotes_started == 1
        assert not _descendants()


async def test_warm_up_starts_the_zygote_before_any_login(tmp_path: Path) -> None:
    async with _runner(tmp_path) as runner:
        assert not _zygotes()
        await runner.warm_up()
        assert len(_zygotes()) == 1
        await runner.warm_up()  # idempotent
        assert runner.zygotes_started == 1
    assert not _descendants()


async def test_spawn_has_no_zygote_to_warm_up(tmp_path: Path) -> None:
    async with _runner(tmp_path, start_method="spawn") as runner:
        await runner.warm_up()
        assert runner.zygotes_started == 0
        assert not _descendants()


async def test_a_runner_must_be_entered_once(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    with pytest.raises(RuntimeError, match="not entered"):
        await runner.authorize_many({})
    async with runner:
        with pytest.raises(RuntimeError, match="entered once"):
            await runner.__aenter__()
    with pytest.raises(RuntimeError, match="closed"):
        await runner.authorize_many({})
    with pytest.raises(RuntimeError, match="closed"):
        await runner.warm_up()


def test_a_bad_start_method_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start_method"):
        _runner(tmp_path, start_method="fork")
