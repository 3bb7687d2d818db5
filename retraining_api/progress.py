"""A running job's progress, log lines, trials and cancel flag, shared across threads.

The CPU work runs in a thread and only touches this object; the runner's heartbeat task
drains it into PostgreSQL every few seconds and sets ``cancelled`` when a cancel was
requested, so the thread never needs a database connection or the event loop.
"""

from __future__ import annotations

import threading
from typing import Any


class Cancelled(Exception):
    """Raised inside the job thread at the next checkpoint after a cancel request.

    Deliberately outside ``neurostream.errors``: it is control flow (like
    ``asyncio.CancelledError``), carrying no message for a person and no HTTP status, and
    only the runner catches it, so an ``except NeurostreamError`` must never swallow it.
    """


class JobProgress:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress = 0.0
        self._logs: list[tuple[str, str]] = []
        self._trials: list[dict[str, Any]] = []
        self.cancelled = threading.Event()

    @property
    def progress(self) -> float:
        with self._lock:
            return self._progress

    def set(self, progress: float, message: str | None = None) -> None:
        with self._lock:
            self._progress = max(self._progress, min(1.0, progress))
            if message:
                self._logs.append(("info", message))

    def log(self, message: str, level: str = "info") -> None:
        with self._lock:
            self._logs.append((level, message))

    def trial(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._trials.append(record)

    def drain(self) -> tuple[float, list[tuple[str, str]], list[dict[str, Any]]]:
        """Progress plus the log lines and trials not yet saved (then forgotten here)."""
        with self._lock:
            logs, trials = self._logs, self._trials
            self._logs, self._trials = [], []
            return self._progress, logs, trials

    def checkpoint(self) -> None:
        """Stop here if the job was cancelled (threads cannot be interrupted from outside)."""
        if self.cancelled.is_set():
            raise Cancelled("cancelled on request")
