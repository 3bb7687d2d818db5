"""Stopping long-running loops: signal handlers installed once, from the main thread only.

Every loop that runs until it is told to stop (a worker replica, the ML data consumers,
the retraining runner) has the same public lifecycle, after arq's ``Worker``: a sync
``request_stop()`` that is safe to call from a signal handler, ``handle_signal(signum)``
(a plain method, so tests call it directly instead of sending signals), and an async
``close()`` that drains in-flight work within a bound and closes what the loop opened.

``Lifecycle`` is that shell, once: ``run()`` = ``start()``, wait for ``request_stop()``,
``close()``; the subclass writes ``start``, ``close`` and its own ``handle_signal`` line.

``every`` and ``settle`` are the two halves of a loop on a timer (the monitoring API's
drift evaluator and canary judge): passes until the stop, a failed pass logged and
retried at the next tick; and a bounded wait for the pass in progress at ``close()``.

``StopSignals`` is the guard around the event loop's signal API: it installs only in the
main thread (``loop.add_signal_handler`` raises elsewhere, and a loop embedded in another
program, e.g. under uvicorn, must not take over its handlers), only once, and removes the
handlers again so a process that outlives the loop (a test run) gets its defaults back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

__all__ = ["STOP_SIGNALS", "Lifecycle", "StopSignals", "every", "settle", "signal_name"]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, for log lines."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


async def every(
    interval_s: float, stopping: asyncio.Event, tick: Callable[[], Awaitable[object]], what: str
) -> None:
    """``tick()`` now and then every ``interval_s`` until ``stopping`` is set; a pass that
    raises is logged and the next one tries again (one bad pass must not end the loop)."""
    while not stopping.is_set():
        try:
            await tick()
        except Exception:
            log.exception("%s failed; retrying in %ss", what, interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_s)


async def settle(task: asyncio.Task[object], timeout_s: float, what: str) -> None:
    """Let ``task`` finish its pass within ``timeout_s``, then cancel it (a bounded close)."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("%s still running after %ss; cancelling it", what, timeout_s)
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class StopSignals:
    """``handler(signum)`` on SIGTERM/SIGINT of the running loop, installed at most once."""

    def __init__(
        self, handler: Callable[[int], None], signals: Sequence[int] = STOP_SIGNALS
    ) -> None:
        self._handler = handler
        self._signals: tuple[int, ...] = tuple(signals)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def installed(self) -> bool:
        return self._loop is not None

    def install(self) -> bool:
        """Install on the running loop; False (and nothing installed) outside the main thread."""
        if self._loop is not None:
            return True
        if threading.current_thread() is not threading.main_thread():
            log.debug("not in the main thread: stop signals left to the embedding program")
            return False
        loop = asyncio.get_running_loop()
        done: list[int] = []
        try:
            for signum in self._signals:
                loop.add_signal_handler(signum, self._handler, signum)
                done.append(signum)
        except (NotImplementedError, RuntimeError):  # Windows' loops, or a nested loop
            for signum in done:
                loop.remove_signal_handler(signum)
            log.debug("this event loop does not take signal handlers")
            return False
        self._loop = loop
        return True

    def remove(self) -> None:
        """Give the signals back to their default handlers (no-op if never installed)."""
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        for signum in self._signals:
            loop.remove_signal_handler(signum)


class Lifecycle(ABC):
    """A loop's public lifecycle: ``run()`` until ``request_stop()``, then ``close()``.

    The stop is an event set from sync code (a signal handler, a test) and awaited by
    ``run()``; the subclass's ``close()`` sets it too and removes ``_signals``.
    """

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._signals = StopSignals(self.handle_signal)

    @abstractmethod
    async def start(self) -> None:
        """Connect and start consuming."""

    @abstractmethod
    async def close(self, wait_s: float | None = None) -> None:
        """Settle in-flight work within ``wait_s``, then close what ``start`` opened."""

    async def run(self) -> None:
        """Start, work until ``request_stop()``, then ``close()`` (also when start fails)."""
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.close()

    def request_stop(self) -> None:
        """Ask ``run()`` to finish (sync, so safe from a signal handler)."""
        self._stopping.set()

    def handle_signal(self, signum: int) -> None:
        """What SIGTERM/SIGINT do: ``request_stop()`` (subclasses log what stops)."""
        log.info("%s got %s; stopping", type(self).__name__, signal_name(signum))
        self.request_stop()

    def install_signal_handlers(self) -> bool:
        """``handle_signal`` on SIGTERM/SIGINT; once, and only from the main thread."""
        return self._signals.install()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()
