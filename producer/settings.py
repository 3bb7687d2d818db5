"""Producer settings, read once by ``python -m producer`` and passed down.

Everything the producer needs beyond ``CoreSettings`` (where the broker and the store are):
which source to read (a board, or a recording file replayed at ``speed``, once unless
``loop``), how to cut windows, how a recording's event codes become labels (``events``),
the simulated oddball paradigm or row/column speller (the synthetic board only), and how
hard to hold on to windows while the broker is away. Env prefix ``NEUROSTREAM_PRODUCER_``;
every setting a user needs is also a flag of ``neurostream produce``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from neurostream.errors import ConfigError
from neurostream.gate import DEFAULT_FLAT_UV, DEFAULT_PEAK_TO_PEAK_UV, Gate
from neurostream.geometry import EpochGeometry
from neurostream.labelling import EventMapping
from neurostream.streamfilter import FilterSpec

# Centro-parietal weights: where a P300 is largest (Pz) and how it spreads.
DEFAULT_P300_CHANNELS: dict[str, float] = {
    "Pz": 1.0,
    "CPz": 0.9,
    "Cz": 0.8,
    "P3": 0.8,
    "P4": 0.8,
    "PO7": 0.6,
    "PO8": 0.6,
    "C3": 0.5,
    "C4": 0.5,
    "Oz": 0.4,
    "Fz": 0.3,
}


def new_session_id() -> str:
    """Sortable and unique without coordination: UTC time plus random bits."""
    return f"s-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


class ProducerSettings(BaseSettings):
    """One headset session: board, windowing, paradigm and publishing limits."""

    model_config = SettingsConfigDict(
        env_prefix="NEUROSTREAM_PRODUCER_", env_file=".env", extra="ignore"
    )

    service: str = Field("p300", pattern=r"^[A-Za-z0-9_.\-]+$")
    board: str = Field(
        "",
        description="'' (the default: the file source when `file` is set, else 'synthetic'), "
        "'synthetic', 'file' (or 'recording': `file` replayed at `speed`), 'lsl' (a live LSL "
        "stream, found by `lsl_name` / `lsl_type` / `lsl_source_id`), 'playback' "
        "(BrainFlow's PLAYBACK_FILE_BOARD; refused for a file with markers), a BrainFlow "
        "board name such as CYTON_BOARD / MUSE_S_BOARD / CROWN_BOARD, or a numeric board id.",
    )
    serial_port: str = ""
    mac_address: str = ""
    ip_address: str = ""
    ip_port: int = 0
    serial_number: str = ""
    other_info: str = ""
    timeout: int = 0
    file: str = Field(
        "",
        description="Recording to replay: CSV (muse-lsl, OpenBCI GUI), EDF/BDF, FIF, "
        "BrainVision, EEGLAB .set, XDF or a BrainFlow file (see neurostream.recordings).",
    )
    format: str = Field("", description="The file's format when its extension does not say.")
    layout: str = Field(
        "",
        description="Board whose row layout a BrainFlow file has (BrainFlow's master_board); "
        "the synthetic board when empty.",
    )
    stream: str = Field("", description="An XDF file's EEG stream (name or type).")
    channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Channels to stream, by name and in this order (default: the file's EEG).",
    )
    drop_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Channels to leave out, by name."
    )
    lsl_name: str = Field("", description="The LSL EEG stream's name (the lsl source).")
    lsl_type: str = Field(
        "", description="Its type; 'EEG' when no name or source id is given either."
    )
    lsl_source_id: str = Field("", description="Its source id (survives a restart of the app).")
    marker_name: str = Field(
        "",
        description="A separate LSL marker stream (a stimulus program's) by name; with "
        "`marker_type` / `marker_source_id`. None given: no marker stream is read (the LSL "
        "EEG stream's own channels are never taken as markers).",
    )
    marker_type: str = Field("", description="The marker stream's type (e.g. 'Markers').")
    marker_source_id: str = Field("", description="The marker stream's source id.")
    marker_delay_s: float = Field(
        0.25,
        ge=0,
        le=30,
        description="How late a marker may arrive after its EEG sample and still cut its "
        "epoch: EEG is held back this long when a marker stream is read.",
    )
    lost_after_s: float = Field(
        2.0, gt=0, description="No samples from the LSL stream this long: the stream is lost."
    )
    give_up_after_s: float | None = Field(
        None,
        gt=0,
        description="End the session when the lost stream has not come back after this "
        "long; None: keep resolving until stopped.",
    )
    resolve_timeout_s: float = Field(
        10.0, gt=0, description="How long the first search for the LSL stream may take."
    )
    record: str = Field(
        "",
        description="Record the LSL streams (EEG and markers, as received) to this XDF file "
        "while streaming; `--file` replays it the same way.",
    )
    results_lsl: bool = Field(
        False,
        description="Push the session's predictions on an LSL outlet for the stimulus "
        "program (stamped on the LSL clock).",
    )
    results_lsl_name: str = Field(
        "neurostream-predictions", description="The predictions outlet's stream name."
    )
    events: str = Field(
        "",
        description="Event codes to classes, e.g. 'target=2,nontarget=1' (see "
        "neurostream.labelling): mapped markers cut labelled epochs, others none (reported). "
        "Empty: every marker cuts an unlabelled epoch.",
    )
    record_only: bool = Field(
        False,
        description="Store the session (windows archived with their labels) without queueing "
        "it for the service's workers (calibration before any model exists).",
    )
    session_id: str = Field(default_factory=new_session_id, pattern=r"^[A-Za-z0-9_.\-]+$")
    duration_s: float | None = Field(None, gt=0, description="None: until stopped.")
    window_s: float = Field(1.0, gt=0)
    step_s: float = Field(0.5, gt=0)
    epoch_tmin: float = -0.1
    epoch_tmax: float = 0.7
    epoch_baseline: str = Field(
        "auto",
        description="Baseline interval of an epoch, recorded with it for the features: "
        "'auto' (tmin..0, none when tmin >= 0), 'none', or 'START,END' in s around the event.",
    )
    filter_l_freq: float | None = Field(
        1.0,
        gt=0,
        description="Causal stream filter (neurostream.streamfilter), run over the continuous "
        "signal per session before windows are cut: high-pass edge (Hz); None: no high-pass.",
    )
    filter_h_freq: float | None = Field(
        30.0, gt=0, description="Its low-pass edge (Hz); None: no low-pass (both None: off)."
    )
    filter_order: int = Field(4, ge=1, le=12, description="Its Butterworth order.")
    gap_s: float = Field(
        0.1,
        gt=0,
        description="A jump between consecutive sample times this much longer (or shorter) "
        "than a sample period is a gap: the filter restarts, windows spanning it are dropped.",
    )
    sliding: bool = Field(
        False,
        description="Also cut sliding windows (band-power services such as alpha detection); "
        "a P300 service only takes epochs.",
    )
    reject_uv: float | None = Field(
        DEFAULT_PEAK_TO_PEAK_UV,
        gt=0,
        description="Artifact gate the session summary reports (neurostream.gate): epochs "
        "over this peak-to-peak (µV) would be rejected; None: no gate. The worker gates by "
        "its model version's own thresholds.",
    )
    flat_uv: float | None = Field(
        DEFAULT_FLAT_UV, gt=0, description="The gate's flat channel: std below this (µV)."
    )
    paradigm: Literal["auto", "oddball", "speller", "none"] = Field(
        "auto",
        description="The simulated P300 paradigm: 'oddball', or 'speller' (a row/column P300 "
        "speller: trials of flashes, one symbol each); 'auto' = the oddball on the synthetic "
        "board only (without `events`), never on a real source; either on a real source is "
        "refused.",
    )
    soa_s: float = Field(0.25, gt=0)
    target_prob: float = Field(1 / 6, gt=0, lt=1)
    speller_rows: int = Field(6, ge=1, le=16, description="The speller grid's rows.")
    speller_cols: int = Field(6, ge=1, le=16, description="Its columns.")
    speller_repetitions: int = Field(
        10, ge=1, le=100, description="Rounds of row and column flashes per trial (symbol)."
    )
    speller_text: str = Field(
        "",
        description="Symbols the simulated user spells, one per trial, cycled; empty: a "
        "seeded random symbol each trial.",
    )
    speller_soa_s: float | None = Field(
        None,
        gt=0,
        description="Time between two flashes; None: the oddball's `soa_s`, so a model trained "
        "on the oddball simulation meets the timing it learnt (a neighbouring flash's P300 "
        "falls elsewhere in an epoch at another SOA, and such a model's scores go wrong).",
    )
    speller_pause_s: float = Field(1.5, ge=0, description="Rest between two trials.")
    p300_amplitude_uv: float = Field(6.0, ge=0)
    p300_latency_s: float = Field(0.3, gt=0)
    p300_width_s: float = Field(0.06, gt=0, description="Standard deviation of the peak.")
    p300_channels: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_P300_CHANNELS))
    extra_noise_uv: float = Field(10.0, ge=0)
    seed: int = 0
    shift_after_s: float | None = Field(
        None, ge=0, description="Demo drift: from this many seconds on, shift some channels."
    )
    shift_channels: list[str] = Field(default_factory=list, description="Channels to shift.")
    shift_gain: float = Field(1.0, ge=0, description="Gain applied to the shifted channels.")
    shift_noise_uv: float = Field(0.0, ge=0, description="White noise added to them (µV).")
    speed: float = Field(
        1.0, ge=0, description="Replay speed of a file: 1 real time, 0 as fast as possible."
    )
    loop: bool = Field(False, description="Replay the file again and again (until duration_s).")
    poll_s: float = Field(0.04, gt=0, description="Board read interval when no data is due.")
    buffer_max: int = Field(10_000, ge=1, description="Windows held during a broker outage.")
    max_in_flight: int = Field(512, ge=1, description="Unconfirmed publishes at once.")
    confirm_timeout_s: float = Field(10.0, gt=0)
    flush_timeout_s: float = Field(60.0, gt=0, description="Wait for confirms at shutdown.")

    @field_validator("channels", "drop_channels", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        """``"TP9,AF7"`` (a flag or an environment variable) or a list."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _epoch_order(self) -> ProducerSettings:
        if self.epoch_tmax <= self.epoch_tmin:
            raise ValueError("epoch_tmax must be greater than epoch_tmin")
        self.geometry  # noqa: B018  (a baseline that cannot be read fails here, at the edge)
        return self

    @property
    def stream_filter(self) -> FilterSpec | None:
        """The causal filter the producer runs over the stream; None when switched off."""
        if self.filter_l_freq is None and self.filter_h_freq is None:
            return None
        return FilterSpec(self.filter_l_freq, self.filter_h_freq, self.filter_order)

    @property
    def geometry(self) -> EpochGeometry:
        """The epochs' geometry: tmin, tmax, baseline and the stream filter's label."""
        text = self.epoch_baseline.strip().lower()
        spec = self.stream_filter
        label = spec.label if spec is not None else None
        if text in ("", "auto"):
            return EpochGeometry.cut(self.epoch_tmin, self.epoch_tmax, "auto", label)
        if text == "none":
            return EpochGeometry.cut(self.epoch_tmin, self.epoch_tmax, None, label)
        try:
            b0, b1 = (float(v) for v in text.split(","))
            return EpochGeometry.cut(self.epoch_tmin, self.epoch_tmax, (b0, b1), label)
        except ValueError:
            raise ConfigError(
                f"epoch baseline {self.epoch_baseline!r} is not START,END in seconds",
                field="epoch_baseline",
                hint="e.g. --baseline -0.1,0 (or auto, none)",
            ) from None

    @property
    def event_mapping(self) -> EventMapping | None:
        """``events`` parsed (a ConfigError if it cannot be); None when empty."""
        return EventMapping.parse(self.events) if self.events.strip() else None

    @property
    def gate(self) -> Gate | None:
        """The artifact gate the session is tallied against; None when both checks are off."""
        if self.reject_uv is None and self.flat_uv is None:
            return None
        return Gate(peak_to_peak_uv=self.reject_uv, flat_uv=self.flat_uv)

    @property
    def lsl_given(self) -> bool:
        """Whether an LSL stream is named (name, type or source id)."""
        return bool(self.lsl_name or self.lsl_type or self.lsl_source_id)

    @property
    def markers_given(self) -> bool:
        """Whether a separate LSL marker stream is named."""
        return bool(self.marker_name or self.marker_type or self.marker_source_id)

    @property
    def source_kind(self) -> str:
        """'file' for a recording replayed by the file source, 'lsl' for a live LSL stream,
        else the board as given."""
        board = self.board.strip().lower()
        if board in ("file", "recording") or (not board and self.file):
            return "file"
        if board == "lsl" or (not board and self.lsl_given):
            return "lsl"
        return board or "synthetic"
