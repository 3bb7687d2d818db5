"""Model faults: a tampered artifact, an unknown feature pipeline, a model raising on predict.

In each case the worker keeps serving the previous version, no window is lost, and the
fault is reported: ``workers.errors`` / ``workers.last_error`` in its heartbeat.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from neurostream import registry, topology
from neurostream.db import open_pool
from neurostream.events import publish_model_event
from neurostream.settings import CoreSettings
from tests.factories import raising_artifact, unique
from tests.faults.conftest import counts, register_service, report, scalar, wait_stored
from tests.faults.test_poison import good_windows, publish
from workers.settings import WorkerSettings
from workers.worker import Worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def wait_until(predicate, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_bad_models_are_refused_and_the_previous_keeps_serving(
    core: CoreSettings, lda4, channel
) -> None:
    svc = await register_service(core.database_url, lda4)
    await topology.declare_service(channel, svc["name"])
    pool = await open_pool(core.database_url, max_size=2)
    meta = dict(
        family="sklearn-lda",
        feature_params=lda4.feature_params,
        model_params={},
        input_spec=lda4.input_spec,
        classes=[0, 1],
        metrics={},
        dataset_hash=None,
        code_version="faults",
    )
    async with pool.connection() as conn:
        tampered = await registry.register_trained(conn, svc["model"], lda4)
        await conn.execute(  # flip the last byte: the stored sha256 no longer matches
            "UPDATE model_versions SET artifact = overlay(artifact placing "
            "decode(CASE WHEN get_byte(artifact, length(artifact) - 1) = 0 THEN '01' "
            "ELSE '00' END, 'hex') from length(artifact)) WHERE id = %s",
            [tampered["id"]],
        )
        unknown = await registry.register_version(
            conn,
            model_name=svc["model"],
            feature_pipeline="erp@99",
            artifact=lda4.artifact,
            **meta,
        )
        raising = await registry.register_version(
            conn,
            model_name=svc["model"],
            feature_pipeline="erp@1",
            artifact=raising_artifact(lda4),
            **meta,
        )
    worker = Worker(core, WorkerSettings(service=svc["name"], heartbeat_s=0.3))
    await worker.start()
    assert worker.slot is not None
    slot = worker.slot
    sessions: dict[str, tuple[str, int]] = {}
    try:

        async def assign(version: dict) -> None:
            async with pool.connection() as conn:
                await registry.assign(conn, svc["name"], svc["model"], str(version["version"]))
            await publish_model_event(channel, svc["name"], version["id"], None, "faults")

        async def stream(fault: str, n: int = 100) -> None:
            session = unique(f"s-{fault}")
            await publish(channel, svc["name"], list(good_windows(session, 0, n)))
            sessions[fault] = (session, n)
            await wait_stored(core.database_url, session, n, 30)

        for fault, version, expect in (
            ("hash-mismatch", tampered, "sha256 mismatch"),
            ("unknown-pipeline", unknown, "erp@99"),
        ):
            errors = slot.errors
            await assign(version)
            await wait_until(lambda errors=errors: slot.errors > errors)
            assert expect in (slot.last_error or ""), slot.last_error
            assert slot.current.ids == (svc["v1"], None)
            await stream(fault)

        # Passes the warm-up, so it is swapped in; the first real batch raises.
        errors = slot.errors
        await assign(raising)
        await wait_until(lambda: slot.current.ids[0] == raising["id"])
        await stream("raises-on-predict")
        assert slot.errors > errors and "raised on predict" in (slot.last_error or "")
        assert slot.current.ids == (svc["v1"], None)
        await asyncio.sleep(1.0)  # a heartbeat carries the fault
        hb = await scalar(
            core.database_url,
            "SELECT ARRAY[model_version_id::text, errors::text, last_error] FROM workers "
            "WHERE worker_id = %s",
            [worker.settings.worker_id],
        )
    finally:
        await worker.close()
        await pool.close()
    assert hb[0] == str(svc["v1"]) and int(hb[1]) >= 3 and "raised on predict" in hb[2]
    for fault, (session, n) in sessions.items():
        c = await counts(core.database_url, session, n)
        report(
            f"model-{fault}",
            sent=n,
            stored=c.rows,
            duplicated=c.duplicated,
            dead_lettered=c.dead,
            served_by=c.per_version,
            reported=hb[2][:60] if fault == "raises-on-predict" else "see workers.errors",
        )
        assert c.distinct == c.rows == n and c.per_version == {svc["v1"]: n} and c.dead == 0
