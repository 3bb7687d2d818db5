"""A live LSL session end to end, as a lab runs one: EEG and a stimulus program's markers.

``neurostream lsl-replay`` streams a real muse-lsl recording (visual P300, subject 2,
held-out run 4) as an LSL EEG outlet in one process; another process pushes the file's
markers on a separate marker stream, under ``unshare --time --monotonic 5000`` so its LSL
clock is 5000 s off the producer's (only ``time_correction`` brings its markers back). The
producer reads both with its LSL source, a real worker scores the epochs with a model
trained on runs 1–3, and the predictions come back over the producer's LSL outlet and the
ML data API's WebSocket. What must hold:

- the stored epochs are the file's: the same count, the same labels, each onset within one
  sample of its event, and the same per-epoch scores (1e-4) as the same span replayed
  from the file — with numeric markers and with PsychoPy-style text markers;
- the XDF recorded while streaming replays as the file: the same samples and events;
- the predictions arrive over LSL and over the WebSocket with the session's seqs, in order;
- an EEG outlet killed mid-session and restarted: the session is marked interrupted with
  the gap, streaming resumes, seqs stay gap-free and unrepeated, no epoch spans the gap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
import pytest
from websockets.asyncio.client import connect

from neurostream.labelling import EventMapping
from neurostream.recordings import read_recording
from neurostream.settings import CoreSettings
from producer.offline import epochs_from_recording
from producer.outlet import source_id
from producer.session import SessionResult, run_session
from producer.settings import ProducerSettings
from tests.factories import unique
from tests.live_support import cli, fetch
from tests.lsl_support import Replays, unshare_refusal
from tests.recording_files import EEG_NOTEBOOKS
from workers.settings import WorkerSettings
from workers.worker import Worker

pytestmark = pytest.mark.e2e

RUNS = sorted((EEG_NOTEBOOKS / "visual/P300/subject2/session1").glob("*.csv"))
P300 = "target=2,nontarget=1"
CLOCK_OFFSET_S = 5000
LEAD_S = 6.0  # replays start this long after they are spawned: the producer resolves first


@pytest.fixture(scope="module")
def service(core: CoreSettings) -> str:
    """A service whose model ``neurostream train`` fitted on runs 1-3 from their markers."""
    if len(RUNS) < 4:
        pytest.skip(f"the shared recordings are absent ({EEG_NOTEBOOKS})")
    service, model = unique("lsl"), unique("lsl-lda")
    files = [a for run in RUNS[:3] for a in ("--file", str(run))]
    cli(core, "train", "--events", P300, "--service", service, "--model-name", model, *files)
    return service


@pytest.fixture
async def worker(core: CoreSettings, service: str) -> AsyncIterator[Worker]:
    w = Worker(core, WorkerSettings(service=service, metrics_port=0))
    await w.start()
    yield w
    await w.close()


@dataclass
class LslListener:
    """The stimulus program's side: an inlet on the session's predictions outlet."""

    session_id: str
    got: list[tuple[list[float], float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        found = pylsl.resolve_byprop("source_id", source_id(self.session_id), 1, 30)
        assert found, "the predictions outlet never appeared"
        inlet = pylsl.StreamInlet(found[0], processing_flags=0)
        inlet.open_stream(10)
        while not self.stop.is_set():
            sample, ts = inlet.pull_sample(0.2)
            if sample is not None:
                self.got.append((sample, ts))


async def ws_listen(core: CoreSettings, data_api: str, session_id: str, out: list[Any]) -> None:
    """A web front end's side: the session's predictions over the WebSocket, from seq 0."""
    for _ in range(300):  # the socket refuses a session the producer has not registered yet
        if await fetch(core, "SELECT 1 FROM sessions WHERE session_id = %s", [session_id]):
            break
        await asyncio.sleep(0.05)
    url = data_api.replace("http://", "ws://", 1)
    async with connect(f"{url}/sessions/{session_id}/predictions/live?since_seq=-1") as ws:
        async for message in ws:
            out.append(json.loads(message))


async def stored(core: CoreSettings, session_id: str, n: int) -> tuple[list[Any], list[Any]]:
    """(predictions as (seq, marker, score, window_ts), gated seqs) once ``n`` epochs are in."""
    preds: list[Any] = []
    gated: list[Any] = []
    for _ in range(600):
        preds = await fetch(
            core,
            "SELECT seq, marker, score, extract(epoch FROM window_ts)::float8 FROM predictions "
            "WHERE session_id = %s ORDER BY seq",
            [session_id],
        )
        gated = await fetch(
            core, "SELECT seq FROM gated WHERE session_id = %s ORDER BY seq", [session_id]
        )
        if len(preds) + len(gated) >= n:
            break
        await asyncio.sleep(0.1)
    return preds, [g[0] for g in gated]


async def file_session(core: CoreSettings, service: str, run: Path, span_s: float) -> str:
    """The same span of the same run replayed from the file (the path already proven)."""
    session_id = unique("file")
    settings = ProducerSettings(
        file=str(run), speed=0, duration_s=span_s, events=P300, service=service,
        session_id=session_id,
    )  # fmt: skip
    await run_session(core, settings)
    return session_id


@pytest.mark.parametrize("markers", ["numeric", "text"])
async def test_a_live_lsl_session_with_another_clocks_markers_matches_the_file(
    core: CoreSettings,
    service: str,
    worker: Worker,
    replays: Replays,
    data_api: str,
    tmp_path: Path,
    markers: str,
) -> None:
    refusal = unshare_refusal(CLOCK_OFFSET_S)
    if refusal:
        pytest.skip(refusal)
    run = RUNS[3]
    span_s = 30.0 if markers == "numeric" else 16.0
    # PsychoPy's markers are strings: sent as text, mapped by text in --events.
    events = P300 if markers == "numeric" else "target=target,nontarget=standard"
    sent_as = ["--marker-names", "2=target,1=standard"] if markers == "text" else []
    name, session_id = unique("muse"), unique("lsl")
    record = tmp_path / "live.xdf"
    settings = ProducerSettings(
        service=service, session_id=session_id, lsl_name=name, marker_name=f"{name}-markers",
        events=events, lost_after_s=1.0, give_up_after_s=1.0, results_lsl=True,
        record=str(record),
    )  # fmt: skip
    start_at = time.time() + LEAD_S
    replays.spawn(run, name=name, only="eeg", start_at=start_at, duration=span_s)
    replays.spawn(
        run, name=name, only="markers", start_at=start_at, duration=span_s,
        clock_offset_s=CLOCK_OFFSET_S, args=sent_as,
    )  # fmt: skip
    listener = LslListener(session_id)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    over_ws: list[Any] = []
    ws_task = asyncio.create_task(ws_listen(core, data_api, session_id, over_ws))
    try:
        result: SessionResult = await run_session(core, settings)
    finally:
        listener.stop.set()
        thread.join(10)
    ws_task.cancel()

    # The file's epochs in that span, cut offline by the producer's own path.
    recording = read_recording(run)
    fs, span = recording.fs, round(span_s * recording.fs)
    inside = recording.events[recording.events[:, 0] < span]
    cropped = dataclasses.replace(
        recording, data=recording.data[:, :span], times=recording.times[:span], events=inside
    )
    file_settings = ProducerSettings(file=str(run), speed=0, events=P300, service=service)
    offline = epochs_from_recording(cropped, file_settings, EventMapping.parse(P300))
    n = len(offline.y)
    assert n > 10
    assert result.samples == span and result.epochs == n
    assert f"{n}/{n} windows confirmed" in "\n".join(result.summary())
    # the events whose whole epoch (-0.1 .. 0.7 s) lies in the span, in seq order
    first, last = round(-0.1 * fs), round(0.7 * fs)
    whole = inside[(inside[:, 0] + first >= 0) & (inside[:, 0] + last <= span)]
    assert whole[:, 1].tolist() == offline.codes.tolist()

    preds, gated = await stored(core, session_id, n)
    seqs = sorted([p[0] for p in preds] + gated)
    assert seqs == list(range(n))  # every epoch once: scored, or gated with its reason
    # the file's labels, per seq, each confirmed by the broker on eeg.labels
    assert [result.truth[i] for i in range(n)] == offline.y.tolist()
    assert result.labels_confirmed == n
    code = {2: 1, 1: 2} if markers == "text" else {2: 2, 1: 1}  # texts get codes in order
    assert [p[1] for p in preds] == [code[int(whole[seq, 1])] for seq, *_ in preds]
    # each onset within one sample of its event: sample 0 is at start_at on every clock
    errors = [abs(t0 - (start_at + (whole[seq, 0] + first) / fs)) * fs for seq, *_, t0 in preds]
    assert max(errors) < 1.0, f"onset errors in samples: {max(errors):.2f}"

    # the session row: the marker clock 5000 s off, every marker placed
    (source,) = (await fetch(core, "SELECT source FROM sessions WHERE session_id = %s", [
        session_id
    ]))[0]  # fmt: skip
    lsl = source["lsl"]
    assert lsl["clock_offsets"]["markers"] == pytest.approx(-CLOCK_OFFSET_S, abs=1.0)
    assert lsl["markers"]["received"] == lsl["markers"]["placed"] == len(inside)
    assert lsl["markers"]["late"] == 0 and lsl["markers"]["outside"] == 0

    # the same span from the file: the same epochs and scores
    file_id = await file_session(core, service, run, span_s)
    file_preds, file_gated = await stored(core, file_id, n)
    assert file_gated == gated
    assert [p[0] for p in file_preds] == [p[0] for p in preds]
    live_scores = np.array([p[2] for p in preds])
    file_scores = np.array([p[2] for p in file_preds])
    assert np.abs(live_scores - file_scores).max() < 1e-4

    # predictions back: over LSL and the WebSocket, the session's seqs in order
    for _ in range(100):
        if len(over_ws) >= len(preds) and len(listener.got) >= len(preds):
            break
        await asyncio.sleep(0.1)
    scored = [p[0] for p in preds]
    assert [int(s[0]) for s, _ in listener.got] == scored
    assert [m["seq"] for m in over_ws] == scored
    assert [m["score"] for m in over_ws] == pytest.approx(live_scores.tolist(), abs=1e-6)
    assert result.predictions_pushed == len(scored)

    # the XDF recorded while streaming replays as the file did
    again = read_recording(record)
    assert again.channels == ("TP9", "AF7", "AF8", "TP10")
    assert np.allclose(again.data, recording.data[:4, :span].astype(np.float32), atol=1e-3)
    assert again.events[:, 0].tolist() == cropped.events[:, 0].tolist()
    print(
        f"\nLSL session ({markers} markers, {span_s:g} s): {n} epochs, marker clock offset "
        f"{lsl['clock_offsets']['markers']:+.4f} s, max onset error {max(errors):.3f} samples, "
        f"max |live - file| score {np.abs(live_scores - file_scores).max():.2e}"
    )


async def test_a_killed_eeg_outlet_interrupts_the_session_and_streaming_resumes(
    core: CoreSettings, service: str, worker: Worker, replays: Replays
) -> None:
    run = RUNS[3]
    name, session_id, src = unique("muse"), unique("lsl"), unique("muse-src")
    settings = ProducerSettings(
        service=service, session_id=session_id, lsl_name=name, marker_name=f"{name}-markers",
        events=P300, lost_after_s=1.0, give_up_after_s=6.0,
    )  # fmt: skip
    ids = ["--source-id", src, "--marker-source-id", f"{src}-markers"]
    start_at = time.time() + LEAD_S
    first = replays.spawn(run, name=name, start_at=start_at, duration=20, args=ids)
    task = asyncio.create_task(run_session(core, settings))
    await asyncio.sleep(start_at + 10 - time.time())
    first.kill()  # the amplifier's app dies mid-session
    await asyncio.sleep(2.5)
    replays.spawn(run, name=name, start_at=time.time() + 2, duration=8, args=ids)
    result = await task

    # interrupted, with the gap; then the end of the second replay, never resumed
    assert len(result.interruptions) == 2
    gap, end = result.interruptions
    assert gap["resumed_at"] is not None and end["resumed_at"] is None
    assert 3.0 < float(gap["gap_s"]) < 10.0  # type: ignore[arg-type]
    row = await fetch(
        core, "SELECT interrupted, interruptions FROM sessions WHERE session_id = %s", [session_id]
    )
    assert row[0][0] is True and row[0][1] == result.interruptions
    before = int(gap["samples_before"])  # type: ignore[call-overload]
    assert 9 * 256 < before < 11 * 256
    assert result.samples == before + 8 * 256  # streaming resumed with every sample

    # seqs gap-free and unrepeated; no epoch spans the gap
    preds, gated = await stored(core, session_id, result.epochs)
    seqs = sorted([p[0] for p in preds] + gated)
    assert seqs == list(range(result.epochs)) and result.epochs > 20
    lost, back = float(gap["last_sample_at"]), float(gap["resumed_at"])  # type: ignore[arg-type]
    n_samples = round(0.8 * 256)
    for _, _, _, t0 in preds:
        assert t0 + n_samples / 256 <= lost + 1e-3 or t0 >= back - 1e-3
    after = [p for p in preds if p[3] >= back - 1e-3]
    assert after, "no epoch was scored after the stream came back"
    print(
        f"\nkilled outlet: gap {float(gap['gap_s']):.2f} s, {result.epochs} epochs "  # type: ignore[arg-type]
        f"({len(after)} after it), {result.epochs_dropped_gap} dropped spanning it"
    )
