"""The demo's second act: retrain on the grown labelled data, compare, promote live.

After the first live session the ground-truth collector has stored its labels and the
archiver its windows. This builds the next training snapshot from every labelled session
of the service, posts a retrain job, polls it to completion, prints challenger and
champion side by side, and promotes the challenger while a second session streams.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
import numpy as np

from launcher import bootstrap
from producer.offline import simulate_epochs, synthetic_recording
from producer.settings import ProducerSettings

TRAIN_DATASET, TEST_DATASET = "p300-train", "p300-heldout"


async def _ok(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise RuntimeError(
            f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text[:300]}"
        )
    return resp.json()


async def _upload_simulated(
    data: httpx.AsyncClient, name: str, kind: str, seed: int, seconds: float, what: str
) -> None:
    settings = ProducerSettings(seed=seed, session_id=f"simulated-{seed}")
    epochs = await asyncio.to_thread(
        simulate_epochs, settings, synthetic_recording(bootstrap.DEFAULT_RECORDING), seconds
    )
    buf = io.BytesIO()
    np.savez(buf, x=epochs.x, y=epochs.y)
    await _ok(
        await data.post(
            "/datasets/upload/npz",
            files={"file": (f"{name}.npz", buf.getvalue(), "application/octet-stream")},
            data={
                "name": name,
                "kind": kind,
                "fs": str(epochs.fs),
                "channels": ",".join(epochs.channels),
                "description": what,
            },
        )
    )


async def ensure_datasets(data: httpx.AsyncClient, seconds: float = 300) -> None:
    """The first training snapshot (a simulated session) and a held-out testing set."""
    if not await _ok(await data.get("/datasets", params={"name": TRAIN_DATASET})):
        await _upload_simulated(
            data, TRAIN_DATASET, "training", 1, seconds, "simulated oddball session, seed 1"
        )
    if not await _ok(await data.get("/datasets", params={"name": TEST_DATASET})):
        await _upload_simulated(
            data, TEST_DATASET, "testing", 99, seconds, "held-out simulated session, seed 99"
        )


async def grow_training_dataset(data: httpx.AsyncClient, service: str) -> dict[str, Any]:
    """Next training version: the latest one plus every labelled session of the service."""
    deadline = time.monotonic() + 30
    labelled: list[str] = []
    while not labelled and time.monotonic() < deadline:
        sessions = await _ok(await data.get("/sessions", params={"limit": 1000}))
        labelled = [
            s["session_id"]
            for s in sessions
            if s.get("service") == service and s.get("labelled", 0) > 0
        ]
        if not labelled:
            await asyncio.sleep(1)
    if not labelled:
        raise RuntimeError("no labelled sessions: is ml_data_api's collector running?")
    latest = (await _ok(await data.get("/datasets", params={"name": TRAIN_DATASET})))[0]
    grown: dict[str, Any] = await _ok(
        await data.post(
            "/datasets",
            json={
                "name": TRAIN_DATASET,
                "kind": "training",
                "session_ids": labelled,
                "base_dataset": latest["id"],
                "description": f"{TRAIN_DATASET} v{latest['version']} + {service} sessions",
            },
        )
    )
    return grown


async def retrain(rt: httpx.AsyncClient, model_name: str, training: str) -> dict[str, Any]:
    """Post a retrain job and poll it to completion; returns the job."""
    accepted = await _ok(
        await rt.post(
            "/jobs",
            json={
                "model_name": model_name,
                "family": "sklearn-lda",
                "training_dataset": training,
                "testing_dataset": TEST_DATASET,
            },
        )
    )
    job_id = accepted["job_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job: dict[str, Any] = await _ok(await rt.get(f"/jobs/{job_id}"))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"retrain job {job_id} {job['status']}: {job.get('error')}")
            return job
        await asyncio.sleep(0.5)
    raise RuntimeError(f"retrain job {job_id} did not finish in 300 s")


def print_comparison(job: dict[str, Any]) -> None:
    result = job.get("result") or {}
    lineage = result.get("lineage") or {}
    print(
        f"\nretrain job {job['id']}: {result.get('model_name')} v{result.get('version')} "
        f"registered as challenger; dataset hash "
        f"{str(lineage.get('training_content_hash', '?'))[:12]}"
    )
    comparison = result.get("comparison") or {}
    print(f"  {'metric (held-out test)':<24}{'challenger':>12}{'champion':>12}{'delta':>10}")
    for metric, row in comparison.items():
        if not isinstance(row, dict):
            continue
        cells = [row.get("challenger"), row.get("champion"), row.get("delta")]
        if not any(isinstance(c, int | float) for c in cells):
            continue  # not a figure (a confusion matrix)
        print(
            f"  {metric:<24}"
            + "".join(
                f"{c:>12.3f}" if isinstance(c, int | float) else f"{'-':>12}" for c in cells[:2]
            )
            + (f"{cells[2]:>+10.3f}" if isinstance(cells[2], int | float) else f"{'-':>10}")
        )


async def promote(rt: httpx.AsyncClient, model_name: str) -> dict[str, Any]:
    promoted: dict[str, Any] = await _ok(
        await rt.post(
            f"/models/{model_name}/promote",
            json={"from_alias": "challenger", "to_alias": "champion"},
        )
    )
    return promoted
