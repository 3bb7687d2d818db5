"""Which source a session reads: a recording, a live LSL stream, a board, or playback.

``open_source`` turns the producer's settings into one ``Source`` (``producer.board``,
``producer.lsl``), refusing combinations that name two sources or options meant for
another source, so a wrong command fails before anything is opened. A file's text markers
are renumbered to the event mapping's codes here (``EventMapping.bind``), as training does.
"""

from __future__ import annotations

from brainflow.board_shim import BrainFlowInputParams

from neurostream.errors import ConfigError
from neurostream.recordings import read_recording
from producer.board import (
    BrainFlowSource,
    ChannelPick,
    FileSource,
    Source,
    existing_file,
    resolve_board,
)
from producer.lsl import LslSource, StreamQuery
from producer.settings import ProducerSettings
from producer.xdf import XdfWriter


def open_source(settings: ProducerSettings) -> Source:
    """The source the settings describe: a recording file, an LSL stream, a live board, or
    playback."""
    kind = settings.source_kind
    if kind != "lsl":
        _refuse_lsl_options(settings, kind)
    if kind == "lsl":
        return _pick(settings, open_lsl(settings))
    if kind == "file":
        if not settings.file:
            raise ConfigError(
                "the file source needs a file: pass --file or set NEUROSTREAM_PRODUCER_FILE",
                field="file",
            )
        recording = read_recording(
            existing_file(settings.file),
            format=settings.format or None,
            board=settings.layout or None,
            channels=settings.channels or None,
            drop=settings.drop_channels,
            stream=settings.stream or None,
        )
        mapping = settings.event_mapping
        if mapping is not None:
            recording = mapping.bind(recording)
        return FileSource(recording, speed=settings.speed, loop=settings.loop)
    board = settings.board.strip() or "synthetic"
    if settings.file and settings.source_kind != "playback":
        raise ConfigError(
            f"--file {settings.file} and --board {board} name two sources",
            field="board",
            hint="drop --board to replay the file (BrainFlow files: --layout BOARD), or "
            "--file to stream the board",
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
    params.master_board = resolve_board(settings.layout or "synthetic")
    return _pick(settings, BrainFlowSource(board, params))


def _pick(settings: ProducerSettings, source: Source) -> Source:
    """``source`` with only the channels the settings name (all when they name none)."""
    if settings.channels or settings.drop_channels:
        return ChannelPick(source, settings.channels or None, settings.drop_channels)
    return source


def open_lsl(settings: ProducerSettings) -> LslSource:
    """The LSL source: the EEG stream, an optional marker stream, an optional XDF record."""
    mapping = settings.event_mapping
    eeg = StreamQuery(
        settings.lsl_name,
        settings.lsl_type or ("" if settings.lsl_name or settings.lsl_source_id else "EEG"),
        settings.lsl_source_id,
    )
    markers = (
        StreamQuery(settings.marker_name, settings.marker_type, settings.marker_source_id)
        if settings.markers_given
        else None
    )
    # Created with the first stream the source finds (never, if it finds none); the source
    # closes it at stop.
    recorder = XdfWriter(settings.record) if settings.record else None
    return LslSource(
        eeg,
        markers,
        text_codes=mapping.text_codes if mapping is not None else None,
        reserved=mapping.codes if mapping is not None else (),
        marker_delay_s=settings.marker_delay_s,
        lost_after_s=settings.lost_after_s,
        give_up_after_s=settings.give_up_after_s,
        resolve_timeout_s=settings.resolve_timeout_s,
        recorder=recorder,
    )


def _refuse_lsl_options(settings: ProducerSettings, kind: str) -> None:
    """LSL-only options given to another source: say so rather than ignore them."""
    given = [
        flag
        for flag, value in (
            ("--marker-name/--marker-type/--marker-source-id", settings.markers_given),
            ("--record", bool(settings.record)),
        )
        if value
    ]
    if given:
        raise ConfigError(
            f"{' and '.join(given)} read a live LSL source; this session's source is {kind}",
            field="board",
            hint="name the EEG stream with --lsl-name/--lsl-type/--lsl-source-id (or --board "
            "lsl); a file's markers are read from the file, a board's from its marker row",
        )


def lsl_of(source: Source) -> LslSource | None:
    """The LSL source under ``source`` (through a channel pick); None for other sources."""
    inner = source.source if isinstance(source, ChannelPick) else source
    return inner if isinstance(inner, LslSource) else None
