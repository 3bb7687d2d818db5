"""The job runner: a task in the API process that claims queued jobs and runs them.

Start-up first marks jobs left 'running' with a stale heartbeat as failed (their runner
died: "interrupted: the retraining API restarted"); they are not re-queued, because a
half-run job may have recorded trials and the caller should decide whether to pay for it
again. Then the loop claims jobs (``store.claim``: SKIP LOCKED, so replicas share the
queue), runs the CPU work in a thread, and a heartbeat task saves progress, logs and
trials while checking for cancel requests. The same loop evaluates triggers and repeats
the stale sweep, so a replica that dies is noticed by the others.

Lifecycle: the API's lifespan calls ``start()`` and ``close()``; ``request_stop()`` (sync)
stops claiming. ``close()`` drains by interruption, not by waiting for jobs that may
take hours: each running job stops at its next checkpoint and is recorded as interrupted
within ``drain_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from neurostream import datasets, registry
from neurostream.lifecycle import signal_name
from neurostream.models.artifacts import DEFAULT_POLICY, ArtifactPolicy
from neurostream.notify import Notifier
from retraining_api import retrain, store, triggers
from retraining_api.progress import Cancelled, JobProgress
from retraining_api.promotion import CHAMPION, JobLost, register_outcome
from retraining_api.settings import RetrainingSettings

log = logging.getLogger(__name__)
FINISHED = Counter("neurostream_retrain_jobs_total", "Retrain jobs finished.", ["status"])
RUNNING = Gauge("neurostream_retrain_jobs_running", "Retrain jobs running in this process.")


class Runner:
    """Claims and runs retrain jobs until ``request_stop()``; ``close()`` interrupts them.

    The pool and notifier are the API's (the runner never closes them).
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        notifier: Notifier,
        settings: RetrainingSettings,
        *,
        policy: ArtifactPolicy = DEFAULT_POLICY,
    ) -> None:
        self.pool = pool
        self.notifier = notifier
        self.settings = settings
        self.policy = policy  # what a champion's artifact may contain (the operator's trust)
        self.runner_id: str = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()
        self._jobs: dict[int, tuple[asyncio.Task[None], JobProgress]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        self._closing: asyncio.Task[None] | None = None

    @property
    def running_jobs(self) -> list[int]:
        """Ids of the jobs this runner is running now."""
        return list(self._jobs)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def claiming(self) -> bool:
        """Whether the claim loop is running (it ends after ``request_stop()``)."""
        return self._loop is not None and not self._loop.done()

    async def recover(self) -> list[int]:
        """Fail jobs whose runner stopped heartbeating; their ids."""
        async with self.pool.connection() as conn:
            ids = await store.fail_stale(conn, self.settings.stale_after_s)
        if ids:
            log.warning("marked interrupted retrain jobs %s as failed", ids)
            FINISHED.labels("failed").inc(len(ids))
        return ids

    async def start(self) -> None:
        """Fail interrupted jobs, then claim queued ones in a background task."""
        await self.recover()
        self._loop = asyncio.create_task(self._run(), name="retrain-runner")

    def wake(self) -> None:
        """Look for queued jobs now rather than at the next poll."""
        self._wake.set()

    def request_stop(self) -> None:
        """Claim no more jobs (sync, so safe from a signal handler); ``close()`` interrupts
        the running ones."""
        self._stopping = True
        self._wake.set()

    def handle_signal(self, signum: int) -> None:
        """What SIGTERM/SIGINT would do (uvicorn owns the API's signals and closes the
        runner from the lifespan)."""
        log.info("retrain runner got %s; claiming no more jobs", signal_name(signum))
        self.request_stop()

    def run_claimed(self, job: dict[str, Any]) -> asyncio.Task[None]:
        """Run a job this runner has claimed (``store.claim``); the loop calls it per claim."""
        progress = JobProgress()
        job_id = int(job["id"])
        task = asyncio.create_task(self._execute(job, progress), name=f"retrain-{job_id}")
        self._jobs[job_id] = (task, progress)
        RUNNING.set(len(self._jobs))

        def done(_: asyncio.Task[None]) -> None:
            self._jobs.pop(job_id, None)
            RUNNING.set(len(self._jobs))
            self._wake.set()

        task.add_done_callback(done)
        return task

    async def close(self, wait_s: float | None = None) -> None:
        """Stop claiming, ask running jobs to stop at their next checkpoint, and record them
        as interrupted (resubmit to retry).

        A job still running after ``wait_s`` (default ``settings.drain_timeout_s``) is
        cancelled and marked interrupted here, so it never stays 'running' behind a closed
        pool. Safe to call more than once.
        """
        if self._closing is None:
            bound = self.settings.drain_timeout_s if wait_s is None else wait_s
            self._closing = asyncio.create_task(self._close(bound), name="retrain-runner-close")
        await asyncio.shield(self._closing)

    async def _close(self, wait_s: float) -> None:
        self.request_stop()
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        for _, progress in self._jobs.values():
            progress.cancelled.set()
        jobs = dict(self._jobs)
        if not jobs:
            return
        _, late = await asyncio.wait([task for task, _ in jobs.values()], timeout=wait_s)
        if not late:
            return
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        error = f"{store.INTERRUPTED} (did not stop within {wait_s:.0f} s of shut-down)"
        for job_id, (task, _) in jobs.items():
            if task not in late:
                continue
            log.error("retrain job %s did not stop in %.0f s; marked interrupted", job_id, wait_s)
            try:
                async with self.pool.connection() as conn:
                    await store.finish(conn, job_id, self.runner_id, "failed", error=error)
            except Exception:  # the next start's recover() marks it instead
                log.exception("could not record the interruption of retrain job %s", job_id)
            FINISHED.labels("failed").inc()

    async def _run(self) -> None:
        last_sweep = 0.0
        while not self._stopping:
            try:
                if time.monotonic() - last_sweep >= self.settings.trigger_check_s:
                    last_sweep = time.monotonic()
                    await self.recover()
                    if await triggers.fire_due(self.pool):
                        self._wake.set()
                while len(self._jobs) < self.settings.max_concurrent_jobs and not self._stopping:
                    async with self.pool.connection() as conn:
                        job = await store.claim(conn, self.runner_id)
                    if job is None:
                        break
                    self.run_claimed(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database outage must not kill the runner
                log.exception("retrain runner iteration failed; retrying")
            self._wake.clear()
            if self._stopping:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
            except TimeoutError:
                pass

    async def _flush(self, job_id: int, progress: JobProgress) -> None:
        value, lines, trials_ = progress.drain()
        async with self.pool.connection() as conn:
            await store.add_logs(conn, job_id, lines)
            await store.add_trials(conn, job_id, trials_)
            state = await store.heartbeat(conn, job_id, self.runner_id, value)
        if state is None or state["cancel_requested"]:
            progress.cancelled.set()  # cancelled by request, or the job is no longer ours

    async def _heartbeat(self, job_id: int, progress: JobProgress) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self._flush(job_id, progress)
            except Exception:
                log.exception("heartbeat of retrain job %s failed", job_id)

    async def _load(self, job: dict[str, Any]) -> tuple[Any, Any, dict[str, Any] | None]:
        spec = job["spec"]
        async with self.pool.connection() as conn:
            train = await datasets.load_snapshot(conn, spec["training_dataset_id"])
            test = await datasets.load_snapshot(conn, spec["testing_dataset_id"])
            champion_id = await registry.resolve_ref(conn, job["model_name"], CHAMPION)
            champion = await registry.fetch_version(conn, champion_id) if champion_id else None
        return train, test, champion

    async def _execute(self, job: dict[str, Any], progress: JobProgress) -> None:
        job_id, spec = job["id"], job["spec"]
        progress.log(f"started on runner {self.runner_id}")
        beat = asyncio.create_task(self._heartbeat(job_id, progress))
        status, error = "failed", None
        try:
            train, test, champion = await self._load(job)
            held = f"v{champion['version']}" if champion else "none"
            progress.set(
                0.05,
                f"loaded {spec['training_dataset']} ({len(train.y)} rows) and "
                f"{spec['testing_dataset']} ({len(test.y)} rows); champion: {held}",
            )
            outcome = await asyncio.to_thread(
                retrain.run, spec, train, test, champion, progress, policy=self.policy
            )
            await self._flush(job_id, progress)
            progress.checkpoint()
            lineage = {
                "training_dataset_id": train.meta["id"],
                "training_dataset": spec["training_dataset"],
                "training_content_hash": train.meta["content_hash"],
                "testing_dataset_id": test.meta["id"],
                "testing_dataset": spec["testing_dataset"],
                "testing_content_hash": test.meta["content_hash"],
                "feature_pipeline": outcome.trained.feature_pipeline,
                "job_id": job_id,
            }
            await register_outcome(
                self.pool,
                self.notifier,
                job,
                self.runner_id,
                outcome,
                champion=champion,
                lineage=lineage,
            )
            status = "succeeded"
        except Cancelled:
            status = "failed" if self._stopping else "cancelled"
            error = (
                f"{store.INTERRUPTED} (shut down while running; resubmit the job)"
                if self._stopping
                else "cancelled on request"
            )
        except JobLost as exc:
            status, error = "lost", str(exc)
        except Exception as exc:
            log.exception("retrain job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        if error:
            progress.log(error, "error")
        await self._finish(job_id, progress, status, error)

    async def _finish(
        self, job_id: int, progress: JobProgress, status: str, error: str | None
    ) -> None:
        _, lines, trials_ = progress.drain()
        try:
            async with self.pool.connection() as conn:
                await store.add_logs(conn, job_id, lines)
                await store.add_trials(conn, job_id, trials_)
                if status in ("failed", "cancelled"):
                    await store.finish(conn, job_id, self.runner_id, status, error=error)
        except Exception:
            log.exception("could not record the end of retrain job %s", job_id)
        FINISHED.labels(status).inc()
