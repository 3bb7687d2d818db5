"""First models for a fresh install: simulate a labelled session, train, register, assign.

Used by ``neurostream train``, the demo and the e2e tests. It drives the producer's offline session
(paradigm + windowing without a broker) and the registry directly, so it needs only
PostgreSQL; workers hear about the new assignment through ``models.events``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika

from neurostream import __version__, registry, topology
from neurostream.db import open_pool
from neurostream.models.training import TrainedModel, train_model
from neurostream.notify import Notifier
from neurostream.settings import CoreSettings
from producer.board import RecordingSource
from producer.offline import simulate_epochs, synthetic_recording
from producer.settings import ProducerSettings

log = logging.getLogger(__name__)
DEFAULT_RECORDING = Path("var/recordings/synthetic-board.csv")


@dataclass(frozen=True)
class Registered:
    model_name: str
    version: int
    version_id: int
    metrics: dict[str, Any]
    dataset_hash: str


def train_from_simulation(
    family: str,
    *,
    seconds: float = 600.0,
    seed: int = 1,
    recording: Path = DEFAULT_RECORDING,
    file: Path | None = None,
    model_params: dict[str, Any] | None = None,
) -> TrainedModel:
    """Train ``family`` on a simulated oddball session (synthetic board or a recorded file)."""
    settings = ProducerSettings(seed=seed, session_id=f"train-{seed}")
    source = (
        RecordingSource.from_file(file, speed=0, loop=True)
        if file
        else synthetic_recording(recording)
    )
    epochs = simulate_epochs(settings, source, seconds)
    log.info(
        "training %s on %d epochs (%d targets) from %.0f s of simulated session",
        family,
        len(epochs.y),
        int(epochs.y.sum()),
        seconds,
    )
    return train_model(family, epochs.x, epochs.y, epochs.fs, model_params=model_params, seed=seed)


async def register(
    core: CoreSettings,
    trained: TrainedModel,
    *,
    model_name: str,
    service: str | None = None,
    alias: str | None = "champion",
    assign: bool = False,
) -> Registered:
    """Register a trained model; optionally alias it and assign the service to it."""
    pool = await open_pool(core.database_url, max_size=2)
    try:
        async with pool.connection() as conn:
            row = await registry.register_trained(
                conn, model_name, trained, code_version=__version__
            )
            ref = str(row["version"])
            if alias:
                await registry.set_alias(conn, model_name, alias, version=row["version"])
                ref = alias
            notify: list[str] = await registry.services_following(conn, model_name, ref)
            if service:
                if await registry.get_service(conn, service) is None:
                    await registry.create_service(
                        conn, service, description="created by neurostream train"
                    )
                current = await registry.resolve_service(conn, service)
                if assign or current.serving is None:
                    await registry.assign(conn, service, model_name, ref)
                    notify.append(service)
        await _notify(core, pool, sorted(set(notify)))
    finally:
        await pool.close()
    return Registered(model_name, row["version"], row["id"], trained.metrics, trained.dataset_hash)


async def _notify(core: CoreSettings, pool: Any, services: list[str]) -> None:
    if not services:
        return
    try:
        connection = await aio_pika.connect_robust(core.amqp_url, timeout=10)
    except Exception as exc:  # workers still pick the change up at their next heartbeat
        log.warning("models.events not published (%s); workers re-check on heartbeat", exc)
        return
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = await topology.declare_exchanges(channel)
        await Notifier(pool, exchanges[topology.MODEL_EVENTS_EXCHANGE]).services(services, "train")
