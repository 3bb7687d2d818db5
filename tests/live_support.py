"""What the end-to-end tests of real recordings share: the CLI as a user runs it, and
reading back what a live session stored."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import psycopg

from neurostream import registry
from neurostream.settings import CoreSettings

NEUROSTREAM = [sys.executable, "-m", "launcher"]


def cli(core: CoreSettings, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")}
    env |= {"NEUROSTREAM_DATABASE_URL": core.database_url, "NEUROSTREAM_AMQP_URL": core.amqp_url}
    result = subprocess.run(
        [*NEUROSTREAM, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


async def fetch(core: CoreSettings, query: str, params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(core.database_url) as db:
        return await (await db.execute(query, params)).fetchall()


async def serving_row(core: CoreSettings, model_name: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(core.database_url) as db:
        meta = await registry.get_version(db, model_name, 1)
        assert meta is not None
        row = await registry.fetch_version(db, meta["id"])
    assert row is not None
    return row


async def predicted(core: CoreSettings, session_id: str, n: int) -> list[tuple[Any, ...]]:
    """The session's prediction rows (seq, marker, score), once all ``n`` are written."""
    query = "SELECT seq, marker, score FROM predictions WHERE session_id = %s ORDER BY seq"
    for _ in range(600):
        got = await fetch(core, query, [session_id])
        if len(got) >= n:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(got)} of {n} predictions stored for {session_id}")
