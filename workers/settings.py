"""Worker settings (prefix ``NEUROSTREAM_WORKER_``), read once by ``python -m workers``."""

from __future__ import annotations

import importlib.util
import os
import socket
import uuid
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from neurostream.decisions import parse_rules
from neurostream.errors import ConfigError


def _default_event_loop() -> Literal["uvloop", "asyncio"]:
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEUROSTREAM_WORKER_", extra="ignore")

    service: str = Field(
        "p300", description="Service whose queue svc.<service> this worker serves."
    )
    worker_id: str = Field(default_factory=_default_worker_id)
    prefetch: int = Field(
        512, ge=1, description="Unacked windows held by this worker; bounds batch size and memory."
    )
    batch_max: int = Field(256, ge=1, description="Largest micro-batch featurized at once.")
    compute_threads: int = Field(
        1,
        ge=0,
        description="Native threads (BLAS, OpenMP, torch) per worker; replicas scale across "
        "cores. 0 keeps the libraries' defaults.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default_factory=_default_event_loop,
        description="uvloop (libuv) cuts the AMQP client's per-message cost: about 12% more "
        "windows/s (bench.suite). Defaults to asyncio where uvloop is not installed (Windows).",
    )
    heartbeat_s: float = Field(
        2.0, gt=0, description="Heartbeat and model-assignment check period."
    )
    model_events: bool = Field(
        True,
        description="Listen on models.events for assignment and canary changes; off, the "
        "worker sees them at its next heartbeat (or, for a canary, at the first session or "
        "write it touches).",
    )
    publish_predictions: bool = Field(True, description="Publish results on eeg.predictions.")
    metrics_port: int = Field(0, ge=0, description="Prometheus port; 0 disables the endpoint.")
    write_retry_max_s: float = Field(5.0, gt=0, description="Cap of the back-off on DB outages.")
    drain_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long close() (SIGTERM) waits for the windows already received to be "
        "written and acked; what is left then is redelivered to another replica.",
    )
    decide: bool = Field(
        True,
        description="Run a decider beside the worker: trial-based paradigms (a P300 speller) "
        "get one decision per trial and stopping rule on eeg.decisions. Every replica may run "
        "one; the queue decide.<service> has a single active consumer.",
    )
    decision_rules: str = Field(
        "fixed:10,posterior:0.99:10",
        description="Stopping rules, comma-separated: fixed:<repetitions> and "
        "posterior:<threshold>[:<max repetitions>]; each makes its own decision per trial. "
        "The posterior reads each flash's probability through its model version's Platt "
        "calibration (fitted on held-out scores at training), so a threshold means what it "
        "says: on the simulated 6x6 speller (60 trials) 0.99 gave 1.00 accuracy at 3.25 "
        "repetitions, as five fixed repetitions did.",
    )
    decide_prefetch: int = Field(
        256, ge=1, description="Unacked prediction messages held by the decider."
    )

    @field_validator("decision_rules")
    @classmethod
    def _rules_parse(cls, v: str) -> str:
        try:
            parse_rules(v)
        except ConfigError as exc:  # pydantic reports ValueErrors under the field's name
            raise ValueError(f"{exc}; {exc.hint}" if exc.hint else str(exc)) from None
        return v
