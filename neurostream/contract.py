"""The window message: the one contract between producer, broker and workers.

A window is a float32 array ``[n_channels, n_samples]`` sent as raw little-endian
bytes (C order) with its metadata in AMQP headers; ``message_id`` is
``<session_id>:<seq>``. ``decode`` validates everything a worker relies on and raises
``ContractError`` with a reason, which the worker forwards to the dead-letter queue.

The prediction message (``PredictionMessage`` of ``PredictionItem``s) is the way back:
what a worker publishes on ``eeg.predictions`` and the LSL outlet and the live WebSocket
read, with the times a closed loop needs (``event_t``, ``last_sample_t``). Trial-based
paradigms (a P300 speller) add two more, at the end: ``TrialTruth``, a trial's truth on
``eeg.labels``, and ``DecisionMessage``, a decider's symbol on ``eeg.decisions``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurostream.errors import ContractError as ContractError  # re-exported
from neurostream.geometry import EpochGeometry

SCHEMA_VERSION = 1
SUPPORTED_SCHEMAS = frozenset({SCHEMA_VERSION})
DTYPE = np.dtype("<f4")
CONTENT_TYPE = "application/x-neurostream-window"
# Bodies over this size are refused before any parsing (overridden by settings).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class WindowKind(StrEnum):
    SLIDING = "sliding"
    EPOCH = "epoch"


class WindowHeader(BaseModel):
    """Metadata carried in AMQP headers; validated on decode."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    session_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    seq: int = Field(ge=0)
    t0: float
    fs: float = Field(gt=0, le=100_000)
    channels: tuple[str, ...] = Field(min_length=1, max_length=1024)
    n_samples: int = Field(ge=1, le=10_000_000)
    kind: WindowKind = WindowKind.SLIDING
    marker: int | None = None
    schema_version: int = Field(SCHEMA_VERSION, alias="schema")
    sent_at: float | None = None
    # Epoch geometry (``neurostream.geometry``), optional so older producers still decode:
    # the epoch's start around its event (s), its baseline interval (s), and the causal
    # stream filter it was cut after (``"1-30@4"``; absent: unfiltered).
    tmin: float | None = None
    baseline: tuple[float, float] | None = None
    filtered: str | None = Field(None, max_length=64)
    # The trial (one decision: a speller's symbol selection) an epoch belongs to, 0-based
    # within the session; None for paradigms without trials, and from older producers.
    trial: int | None = Field(None, ge=0)

    @field_validator("t0", "fs")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v not in SUPPORTED_SCHEMAS:
            raise ValueError(f"unknown schema version {v}; supported: {sorted(SUPPORTED_SCHEMAS)}")
        return v

    @field_validator("tmin")
    @classmethod
    def _finite_tmin(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("baseline")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (math.isfinite(v[0]) and math.isfinite(v[1]) and v[0] < v[1]):
            raise ValueError("must be two finite times, start before end")
        return v

    @property
    def message_id(self) -> str:
        return message_id(self.session_id, self.seq)

    @property
    def geometry(self) -> EpochGeometry | None:
        """The epoch geometry the window carries; None without ``tmin`` (a sliding window,
        or a producer that predates the headers)."""
        if self.tmin is None:
            return None
        return EpochGeometry(self.tmin, None, self.baseline, self.filtered)


def message_id(session_id: str, seq: int) -> str:
    return f"{session_id}:{seq}"


@dataclass(frozen=True, slots=True)
class Window:
    header: WindowHeader
    data: np.ndarray  # float32 [n_channels, n_samples]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.header.channels), self.header.n_samples)


def make_window(
    data: np.ndarray,
    *,
    session_id: str,
    seq: int,
    t0: float,
    fs: float,
    channels: tuple[str, ...] | list[str],
    kind: WindowKind | str = WindowKind.SLIDING,
    marker: int | None = None,
    geometry: EpochGeometry | None = None,
    filtered: str | None = None,
    trial: int | None = None,
) -> Window:
    """Build a valid window from an array (used by the producer and test factories).

    ``geometry`` (epochs) sets the ``tmin``/``baseline``/``filtered`` headers; ``filtered``
    alone marks a sliding window cut from a filtered stream; ``trial`` places an epoch in
    a trial-based paradigm's trial."""
    arr = np.ascontiguousarray(data, dtype=DTYPE)
    if arr.ndim != 2 or arr.shape[0] != len(channels):
        raise ContractError(
            f"data shape {arr.shape} does not match {len(channels)} channels",
            session_id=session_id,
            seq=seq,
        )
    header = WindowHeader(
        session_id=session_id,
        seq=seq,
        t0=t0,
        fs=fs,
        channels=tuple(channels),
        n_samples=arr.shape[1],
        kind=WindowKind(kind),
        marker=marker,
        tmin=geometry.tmin if geometry is not None else None,
        baseline=geometry.baseline if geometry is not None else None,
        filtered=geometry.filtered if geometry is not None else filtered,
        trial=trial,
    )
    return Window(header=header, data=arr)


def encode(window: Window, *, sent_at: float | None = None) -> tuple[bytes, dict[str, Any]]:
    """Body and AMQP headers for a window; ``sent_at`` stamps the publish time."""
    h = window.header
    headers: dict[str, Any] = {
        "session_id": h.session_id,
        "seq": h.seq,
        # AMQP tables carry floats as 32-bit (pamqp), which would round a Unix time to
        # minutes: times and rates travel as exact decimal strings instead.
        "t0": repr(float(h.t0)),
        "fs": repr(float(h.fs)),
        "channels": list(h.channels),
        "n_samples": h.n_samples,
        "kind": h.kind.value,
        "schema": h.schema_version,
        "sent_at": repr(float(sent_at if sent_at is not None else time.time())),
    }
    if h.marker is not None:
        headers["marker"] = int(h.marker)
    if h.tmin is not None:
        headers["tmin"] = repr(float(h.tmin))
    if h.baseline is not None:
        headers["baseline"] = [repr(float(t)) for t in h.baseline]
    if h.filtered is not None:
        headers["filtered"] = h.filtered
    if h.trial is not None:
        headers["trial"] = int(h.trial)
    body = np.ascontiguousarray(window.data, dtype=DTYPE).tobytes(order="C")
    return body, headers


def _plain(value: Any) -> Any:
    """AMQP libraries hand header strings back as bytes or str; normalise to str."""
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _plain_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """``_plain`` over the headers, touching only values that need it: most arrive as str
    and int already, and a per-value call cost 5 us of a window's ~11 us decode."""
    raw = dict(headers or {})
    for key, value in raw.items():
        if isinstance(value, bytes | bytearray) or (
            isinstance(value, list | tuple) and not all(type(v) is str for v in value)
        ):
            raw[key] = _plain(value)
    return raw


def decode(
    body: bytes,
    headers: Mapping[str, Any] | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    expected_fs: float | None = None,
) -> Window:
    """Validate and decode a window; every violation raises ``ContractError``."""
    raw = _plain_headers(headers)
    session_id = raw.get("session_id") if isinstance(raw.get("session_id"), str) else None
    seq_raw = raw.get("seq")
    seq = seq_raw if isinstance(seq_raw, int) and not isinstance(seq_raw, bool) else None
    if len(body) > max_bytes:
        raise ContractError(
            f"body of {len(body)} bytes exceeds the {max_bytes}-byte limit",
            session_id=session_id,
            seq=seq,
        )
    if "schema" not in raw:
        raise ContractError("missing header 'schema'", session_id=session_id, seq=seq)
    try:
        header = WindowHeader.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "headers"
        raise ContractError(
            f"invalid header '{field}': {first['msg']}", session_id=session_id, seq=seq
        ) from None
    n_ch = len(header.channels)
    expected = n_ch * header.n_samples * DTYPE.itemsize
    if len(body) != expected:
        raise ContractError(
            f"body is {len(body)} bytes but shape [{n_ch}, {header.n_samples}] float32 "
            f"needs {expected}",
            session_id=header.session_id,
            seq=header.seq,
        )
    if expected_fs is not None and not math.isclose(header.fs, expected_fs, rel_tol=1e-6):
        raise ContractError(
            f"fs {header.fs} Hz does not match the service's {expected_fs} Hz",
            session_id=header.session_id,
            seq=header.seq,
        )
    data = np.frombuffer(body, dtype=DTYPE).reshape(n_ch, header.n_samples)
    if not np.isfinite(data).all():
        raise ContractError(
            "data contains NaN or Inf", session_id=header.session_id, seq=header.seq
        )
    return Window(header=header, data=data)


# --- The prediction message -------------------------------------------------------------
#
# What a worker publishes on ``eeg.predictions`` (key ``<service>.<session_id>``) after the
# durable write, one JSON body per session and batch, and what the LSL outlet
# (``producer.outlet``) and the live WebSocket (``ml_data_api.routers.live``) read:
#
#     {"session_id": ..., "predictions": [{"seq", "model_version_id", "predicted", "score",
#      "marker", "t0", "kind", "fs", "n_samples", "tmin", "trial"}, ...],
#      "gated": [{"seq", "trial", "marker", "reason"}, ...]}
#
# ``fs``, ``n_samples``, ``tmin``, ``trial`` and ``gated`` came later: a body from an older
# worker lacks them and still decodes; only the times derived from them (``event_t``,
# ``last_sample_t``) are None, and ``gated`` is empty.
PREDICTIONS_CONTENT_TYPE = "application/json"
_M = TypeVar("_M", bound=BaseModel)


def _decode_json(model: type[_M], body: bytes | str, what: str) -> _M:
    """Validate a JSON body; anything unreadable raises ``ContractError`` with the reason."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ContractError(f"invalid {what} '{field}': {first['msg']}", field=field) from None


class PredictionItem(BaseModel):
    """One serving prediction of a message, with where its window lies in time (wall s)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: int = Field(ge=0)
    model_version_id: int
    predicted: int
    score: float
    marker: int | None = None
    t0: float  # the window's first sample
    kind: WindowKind
    fs: float | None = Field(None, gt=0)
    n_samples: int | None = Field(None, ge=1)
    tmin: float | None = None  # an epoch's start around its event (s)
    trial: int | None = None  # the window header's trial (trial-based paradigms)

    @field_validator("t0")
    @classmethod
    def _finite_t0(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @property
    def last_sample_t(self) -> float | None:
        """Wall time of the window's last sample; None without ``fs`` and ``n_samples``."""
        if self.fs is None or self.n_samples is None:
            return None
        return self.t0 + (self.n_samples - 1) / self.fs

    @property
    def event_t(self) -> float | None:
        """Wall time the prediction is about: an epoch's event, a sliding window's last sample.

        The windower cuts an epoch from its event's sample plus ``round(tmin * fs)``
        samples, so the event is ``t0 - round(tmin * fs) / fs``. None when the message
        lacks what that takes (an older worker)."""
        if self.kind is WindowKind.EPOCH:
            if self.tmin is None or self.fs is None:
                return None
            return self.t0 - round(self.tmin * self.fs) / self.fs
        return self.last_sample_t


class GatedItem(BaseModel):
    """An epoch the serving version's artifact gate kept from being scored.

    Published so a decider counting a trial's flashes knows the flash was seen: it adds no
    evidence, but a repetition is complete without it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: int = Field(ge=0)
    trial: int | None = None
    marker: int | None = None
    reason: str


class PredictionMessage(BaseModel):
    """One session's predictions of a worker's batch, as published on ``eeg.predictions``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    session_id: str = Field(min_length=1, max_length=128)
    predictions: list[PredictionItem]
    gated: list[GatedItem] = Field(default_factory=list)

    def encode(self) -> bytes:
        """The JSON body (the keys above; absent times as ``null``)."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, body: bytes | str) -> PredictionMessage:
        """Validate a body; anything unreadable raises ``ContractError`` with the reason."""
        return _decode_json(cls, body, "prediction message")


# --- Trials and decisions ---------------------------------------------------------------
#
# A trial-based paradigm (a row/column P300 speller) makes one decision per trial from many
# epochs. Its truth is a set of stimulus codes (the target symbol's row and column), not
# one class per epoch: the producer publishes a ``TrialTruth`` once per trial on
# ``eeg.labels`` with the routing key ``trial.<service>.<session_id>`` (``trial_key``) and
# the header ``x-neurostream-kind: trial`` (``KIND_HEADER``/``TRIAL_KIND``), beside the
# per-epoch target/non-target labels. A decider publishes a ``DecisionMessage`` on
# ``eeg.decisions`` with the key ``<service>.<session_id>``.
KIND_HEADER = "x-neurostream-kind"
TRIAL_KIND = "trial"
_SESSION_ID = r"^[A-Za-z0-9_.\-]+$"


def trial_key(service: str, session_id: str) -> str:
    """The ``eeg.labels`` routing key of a session's trial truths."""
    return f"{TRIAL_KIND}.{service}.{session_id}"


class TrialTruth(BaseModel):
    """The truth of one trial: the stimulus codes that were targets, and the symbol."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    session_id: str = Field(min_length=1, max_length=128, pattern=_SESSION_ID)
    trial: int = Field(ge=0)
    targets: list[int] = Field(min_length=1)
    symbol: str | None = Field(None, max_length=64)
    source: str = Field("paradigm", min_length=1, max_length=64)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, body: bytes | str) -> TrialTruth:
        """Validate a body; anything unreadable raises ``ContractError`` with the reason."""
        return _decode_json(cls, body, "trial truth")


class DecisionMessage(BaseModel):
    """One decision of a trial under one stopping rule, with the evidence that made it.

    ``codes`` are the stimulus codes of the chosen symbol (row, column); ``evidence`` the
    summed log-likelihood ratio per stimulus code (str keys: JSON); ``last_event_t`` and
    ``last_sample_t`` the wall times of the last flash used and of its epoch's last sample,
    so a subscriber measures acquisition-to-decision time against ``decided_at``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    session_id: str = Field(min_length=1, max_length=128, pattern=_SESSION_ID)
    service: str = Field(min_length=1, max_length=128)
    trial: int = Field(ge=0)
    rule: str = Field(min_length=1, max_length=64)
    symbol_index: int = Field(ge=0)
    symbol: str
    codes: list[int]
    posterior: float = Field(ge=0, le=1)
    repetitions: int = Field(ge=0)
    epochs: int = Field(ge=0)
    model_version_ids: list[int]
    last_event_t: float | None = None
    last_sample_t: float | None = None
    decided_at: float
    evidence: dict[str, float]

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, body: bytes | str) -> DecisionMessage:
        """Validate a body; anything unreadable raises ``ContractError`` with the reason."""
        return _decode_json(cls, body, "decision message")
