"""One headset session: read the board, cut windows, publish them, record the session.

``run_session`` is the producer's loop: it registers the session in PostgreSQL, reads
chunks from the source, lets the oddball paradigm add stimuli and P300s, hands the
chunks to the windower and publishes every window (and, for epochs with known ground
truth, a label event). On ``stop`` (SIGTERM) or at ``duration_s`` it stops reading,
waits for the broker to confirm what was cut, and closes the session row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from brainflow.board_shim import BrainFlowInputParams
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from neurostream.contract import WindowKind
from neurostream.db import open_pool
from neurostream.errors import ConfigError
from neurostream.settings import CoreSettings
from producer.board import BrainFlowSource, RecordingSource, Source, resolve_board
from producer.paradigm import OddballParadigm, label_for
from producer.publisher import WindowPublisher
from producer.settings import ProducerSettings
from producer.shift import ChannelShift
from producer.windowing import Windower

log = logging.getLogger(__name__)


@dataclass
class SessionResult:
    session_id: str
    service: str
    fs: float
    channels: tuple[str, ...]
    windows_published: int = 0
    windows_confirmed: int = 0
    labels_confirmed: int = 0
    epochs: int = 0
    samples: int = 0
    truth: dict[int, int] = field(default_factory=dict)  # seq -> label
    first_seq: int | None = None
    last_seq: int | None = None
    flushed: bool = True


def open_source(settings: ProducerSettings) -> Source:
    """The source the settings describe (a live board, playback or a fast recording)."""
    if settings.board.strip().lower() == "recording":
        if not settings.file:
            raise ConfigError(
                "board 'recording' needs a file: pass --file or set NEUROSTREAM_PRODUCER_FILE",
                field="file",
            )
        return RecordingSource.from_file(
            settings.file, board=settings.master_board, speed=settings.speed, loop=settings.loop
        )
    params = BrainFlowInputParams()
    for name in (
        "serial_port",
        "mac_address",
        "ip_address",
        "ip_port",
        "serial_number",
        "other_info",
        "timeout",
        "file",
    ):
        setattr(params, name, getattr(settings, name))
    params.master_board = resolve_board(settings.master_board)
    return BrainFlowSource(settings.board, params)


def make_paradigm(
    settings: ProducerSettings, fs: float, channels: tuple[str, ...]
) -> OddballParadigm | None:
    if settings.paradigm == "none":
        return None
    return OddballParadigm(
        fs,
        channels,
        soa_s=settings.soa_s,
        target_prob=settings.target_prob,
        amplitude_uv=settings.p300_amplitude_uv,
        latency_s=settings.p300_latency_s,
        width_s=settings.p300_width_s,
        weights=settings.p300_channels,
        noise_uv=settings.extra_noise_uv,
        first_onset_s=max(0.5, -settings.epoch_tmin),
        seed=settings.seed,
    )


def make_shift(
    settings: ProducerSettings, fs: float, channels: tuple[str, ...]
) -> ChannelShift | None:
    if settings.shift_after_s is None or not settings.shift_channels:
        return None
    return ChannelShift(
        fs,
        channels,
        after_s=settings.shift_after_s,
        shift_channels=settings.shift_channels,
        gain=settings.shift_gain,
        noise_uv=settings.shift_noise_uv,
        seed=settings.seed,
    )


async def run_session(
    core: CoreSettings,
    settings: ProducerSettings,
    *,
    source: Source | None = None,
    stop: asyncio.Event | None = None,
) -> SessionResult:
    """Stream one session until ``duration_s``, the source's end, or ``stop``."""
    src = source if source is not None else open_source(settings)
    stop = stop or asyncio.Event()
    result = SessionResult(settings.session_id, settings.service, src.fs, tuple(src.channels))
    pool = await open_pool(core.database_url, max_size=2)
    publisher = WindowPublisher(
        core.amqp_url,
        settings.service,
        buffer_max=settings.buffer_max,
        max_in_flight=settings.max_in_flight,
        confirm_timeout_s=settings.confirm_timeout_s,
    )
    try:
        await publisher.start()
        await _register(pool, settings, src)
        src.start()
        try:
            await _stream(settings, src, publisher, stop, result)
        finally:
            src.stop()
        result.flushed = await publisher.flush(settings.flush_timeout_s)
    finally:
        await publisher.close(flush_s=0)
        result.windows_published = publisher.windows_published
        result.windows_confirmed = publisher.windows_confirmed
        result.labels_confirmed = publisher.labels_confirmed
        with contextlib.suppress(Exception):
            await _finish(pool, result)
        await pool.close()
    log.info(
        "session %s: %d windows published, %d confirmed, %d epochs",
        result.session_id,
        result.windows_published,
        result.windows_confirmed,
        result.epochs,
    )
    return result


async def _stream(
    settings: ProducerSettings,
    src: Source,
    publisher: WindowPublisher,
    stop: asyncio.Event,
    result: SessionResult,
) -> None:
    paradigm = make_paradigm(settings, src.fs, result.channels)
    shift = make_shift(settings, src.fs, result.channels)
    windower = Windower(
        session_id=settings.session_id,
        fs=src.fs,
        channels=result.channels,
        window_s=settings.window_s,
        step_s=settings.step_s,
        tmin=settings.epoch_tmin,
        tmax=settings.epoch_tmax,
        sliding=settings.sliding,
    )
    limit = round(settings.duration_s * src.fs) if settings.duration_s else None
    while not stop.is_set() and (limit is None or result.samples < limit):
        chunk = src.read()
        if chunk is None:
            break
        if chunk.n == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.poll_s)
            continue
        if limit is not None:
            chunk = chunk.head(limit - result.samples)
        data, markers = chunk.data, chunk.markers
        if paradigm is not None:
            data, markers = paradigm.apply(chunk.data, result.samples)
        if shift is not None:
            data = shift.apply(data, result.samples)
        result.samples += chunk.n
        for window in windower.push(data, chunk.timestamps, markers):
            seq = window.header.seq
            await publisher.publish_window(window)
            if result.first_seq is None:
                result.first_seq = seq
            result.last_seq = seq
            if window.header.kind is WindowKind.EPOCH and window.header.marker is not None:
                result.epochs += 1
                label = label_for(window.header.marker) if paradigm is not None else None
                if label is not None:
                    result.truth[seq] = label
                    await publisher.publish_label(settings.session_id, seq, label)


async def _register(pool: AsyncConnectionPool, settings: ProducerSettings, src: Source) -> None:
    paradigm: dict[str, object] = {"kind": settings.paradigm}
    if settings.paradigm == "oddball":
        paradigm |= settings.model_dump(
            include={
                "soa_s",
                "target_prob",
                "p300_amplitude_uv",
                "p300_latency_s",
                "p300_width_s",
                "extra_noise_uv",
                "seed",
            }
        )
    async with pool.connection() as conn:
        await conn.execute(
            """
            INSERT INTO sessions (session_id, service, board, fs, channels, paradigm)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (session_id) DO UPDATE SET service = EXCLUDED.service,
                board = EXCLUDED.board, fs = EXCLUDED.fs, channels = EXCLUDED.channels,
                paradigm = EXCLUDED.paradigm, ended_at = NULL
            """,
            [
                settings.session_id,
                settings.service,
                src.name,
                src.fs,
                Jsonb(list(src.channels)),
                Jsonb(paradigm),
            ],
        )


async def _finish(pool: AsyncConnectionPool, result: SessionResult) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE sessions SET ended_at = now(), windows_confirmed = %s WHERE session_id = %s",
            [result.windows_confirmed, result.session_id],
        )
