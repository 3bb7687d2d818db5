"""Real LSL outlets for the LSL tests: replay processes, in-process outlets, a reading loop.

``Replays`` starts ``neurostream lsl-replay`` in subprocesses (optionally under
``unshare --time --monotonic N --fork``, which puts the process's LSL clock N s off ours)
and kills every one it started, by process group, when closed. ``Pusher`` is an outlet in
the test's own process that pushes synthetic samples on time whenever the reading loop
asks it to (``drain`` calls it), so a test controls exactly when a stream goes silent or
away. Names and source ids are unique per test, so tests never see each other's streams.
``open_inlet`` and ``channel_labels`` read an outlet as an experiment would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from producer.board import Chunk
from tests.factories import unique

ROOT = Path(__file__).resolve().parents[1]
REPLAY = [sys.executable, "-m", "launcher", "lsl-replay"]


def unshare_refusal(offset_s: float) -> str | None:
    """Why a time namespace cannot be made here (None: it can)."""
    try:
        done = subprocess.run(
            ["unshare", "--time", "--monotonic", str(int(offset_s)), "--fork", "true"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare cannot run: {exc}"
    if done.returncode != 0:
        return f"unshare --time is not permitted here: {done.stderr.strip()}"
    return None


@dataclass
class Replay:
    """One replay process; ``story`` is the line it printed once its outlets were open."""

    proc: subprocess.Popen[str]
    story: str
    log: Path
    lines: list[str] = field(default_factory=list)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class Replays:
    """Replay processes a test started; ``close()`` kills those still running."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Replay] = []

    def spawn(
        self,
        file: Path,
        *,
        name: str,
        only: str = "both",
        start_at: float | None = None,
        duration: float | None = None,
        clock_offset_s: float | None = None,
        args: Sequence[str] = (),
    ) -> Replay:
        """Start a replay and wait until its outlets exist (its first line)."""
        cmd = [*REPLAY, str(file), "--name", name, "--only", only, "--wait-consumers", "15"]
        if start_at is not None:
            cmd += ["--start-at", repr(start_at)]
        if duration is not None:
            cmd += ["--duration", str(duration)]
        cmd += list(args)
        if clock_offset_s is not None:
            namespace = ["--time", "--monotonic", str(int(clock_offset_s)), "--fork"]
            cmd = ["unshare", *namespace, "--kill-child", *cmd]
        log = self.logs / f"replay-{len(self.started)}.log"
        with log.open("w") as stderr:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
                start_new_session=True,
            )  # fmt: skip
        replay = Replay(proc, "", log)
        self.started.append(replay)
        first = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                replay.lines.append(line.rstrip("\n"))
                first.set()
            first.set()

        threading.Thread(target=read, daemon=True).start()
        if not first.wait(30) or not replay.lines:
            replay.kill()
            raise AssertionError(f"the replay printed nothing: {log.read_text()[-2000:]}")
        replay.story = replay.lines[0]
        assert replay.story.startswith("streaming "), replay.story
        return replay

    def close(self) -> None:
        for replay in self.started:
            replay.kill()


class Pusher:
    """An EEG outlet in this process: ``push()`` sends the samples due since the last call."""

    def __init__(
        self,
        name: str,
        n_channels: int = 4,
        fs: float = 256.0,
        *,
        source_id: str = "",
        labels: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
        values: Callable[[int, int], np.ndarray] | None = None,
    ) -> None:
        info = pylsl.StreamInfo(name, "EEG", n_channels, fs, "float32", source_id or unique("src"))
        if labels is not None:
            channels = info.desc().append_child("channels")
            for i, label in enumerate(labels):
                ch = channels.append_child("channel")
                ch.append_child_value("label", label)
                if types is not None:
                    ch.append_child_value("type", types[i])
                if units is not None:
                    ch.append_child_value("unit", units[i])
        self.outlet: Any = pylsl.StreamOutlet(info)
        self.fs, self.n_channels = fs, n_channels
        self.values = values or (
            lambda a, b: np.tile(np.arange(a, b, dtype=np.float32), (n_channels, 1)).T
        )
        self.t0 = pylsl.local_clock()
        self.sent = 0
        self.paused = False

    def push(self) -> None:
        due = int((pylsl.local_clock() - self.t0) * self.fs) + 1
        if due > self.sent and not self.paused:  # paused: the samples due are never sent
            self.outlet.push_chunk(self.values(self.sent, due), self.t0 + (due - 1) / self.fs)
        self.sent = max(self.sent, due)

    def close(self) -> None:
        self.outlet = None


def drain(
    source: Any,
    until: Callable[[list[Chunk]], bool],
    *,
    timeout_s: float = 30.0,
    tick: Callable[[], None] | None = None,
) -> tuple[list[Chunk], bool]:
    """Read ``source`` every 10 ms until ``until(chunks)`` or it returns None.

    Returns every chunk read (empty ones too) and whether the source ended (None).
    """
    chunks: list[Chunk] = []
    deadline = time.monotonic() + timeout_s
    while not until(chunks):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not done after {timeout_s} s ({sum(c.n for c in chunks)} samples)"
            )
        if tick is not None:
            tick()
        chunk = source.read()
        if chunk is None:
            return chunks, True
        chunks.append(chunk)
        time.sleep(0.01)
    return chunks, False


def joined(chunks: Sequence[Chunk]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data [channels, n], wall times [n], markers [n]) of ``chunks`` end to end."""
    full = [c for c in chunks if c.n]
    if not full:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0), np.zeros(0)
    return (
        np.concatenate([c.data for c in full], axis=1),
        np.concatenate([c.timestamps for c in full]),
        np.concatenate([c.markers for c in full]),
    )


def samples(chunks: Sequence[Chunk]) -> int:
    return sum(c.n for c in chunks)


def open_inlet(source_id: str) -> pylsl.StreamInlet:
    """The one stream with ``source_id``, opened, its timestamps as pushed (blocking)."""
    found = pylsl.resolve_byprop("source_id", source_id, 1, 10)
    assert len(found) == 1, f"no outlet with source id {source_id} is visible on the network"
    inlet = pylsl.StreamInlet(found[0], processing_flags=0)
    inlet.open_stream(10)
    return inlet


def channel_labels(info: pylsl.StreamInfo) -> list[str]:
    """The channel labels a stream's description declares, in order."""
    out = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        out.append(ch.child_value("label"))
        ch = ch.next_sibling()
    return out
