"""Stop signals: installed once, only from the main thread, and given back on remove."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from neurostream.lifecycle import StopSignals, signal_name


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
