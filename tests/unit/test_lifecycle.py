"""Stop signals: installed once, only from the main thread, and given back on remove; a
loop on a timer outlives a failed pass and stops when told; a close is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from neurostream.lifecycle import StopSignals, every, settle, signal_name


async def test_a_real_sigterm_reaches_the_handler_once_and_remove_restores_the_default() -> None:
    got: list[int] = []
    signals = StopSignals(got.append)
    assert signals.install() and signals.install() and signals.installed
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    finally:
        signals.remove()
    assert got == [signal.SIGTERM]  # installed twice, called once
    assert not signals.installed
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signals.remove()  # a second remove is harmless


def test_outside_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    result: list[bool] = []

    async def install() -> None:
        result.append(StopSignals(lambda _: None).install())

    thread = threading.Thread(target=lambda: asyncio.run(install()))
    thread.start()
    thread.join(10)
    assert result == [False]
    assert signal.getsignal(signal.SIGTERM) == before


def test_signal_names_for_logs() -> None:
    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(10_000) == "signal 10000"


async def test_every_retries_after_a_failed_pass_and_stops_when_told() -> None:
    stopping = asyncio.Event()
    passes: list[int] = []

    async def tick() -> None:
        passes.append(len(passes))
        if len(passes) == 2:
            raise RuntimeError("one bad pass")
        if len(passes) == 4:
            stopping.set()

    await asyncio.wait_for(every(0.001, stopping, tick, "test pass"), 10)
    assert passes == [0, 1, 2, 3]  # the raise on pass 2 did not end the loop


async def test_settle_waits_for_a_pass_that_finishes_and_cancels_one_that_does_not() -> None:
    finished = asyncio.create_task(asyncio.sleep(0, result=None))
    await settle(finished, 5, "quick pass")
    assert finished.done() and not finished.cancelled()

    stuck = asyncio.create_task(asyncio.Event().wait())
    await settle(stuck, 0.01, "stuck pass")
    assert stuck.cancelled()
