"""PostgreSQL access: one async pool per process and idempotent start-up migrations.

The same schema serves plain PostgreSQL and TimescaleDB: when the ``timescaledb``
extension is available, the time-series tables become hypertables; otherwise they stay
plain tables with time indexes. Both paths run through ``migrate``.
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from neurostream.errors import DatabaseUnavailable as DatabaseUnavailable  # re-exported

log = logging.getLogger(__name__)

# Time-series tables and their time column.
HYPERTABLES: dict[str, str] = {
    "predictions": "window_ts",
    "gated": "window_ts",
    "rejections": "rejected_at",
    "windows": "window_ts",
    "drift_metrics": "time",
}
_MIGRATION_LOCK = 0x6E657572  # "neur": serialises migrations of services starting together


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True if created."""
    params = conninfo_to_dict(url)
    dbname = str(params.get("dbname", "postgres"))
    admin = make_conninfo(**{**params, "dbname": "postgres"})  # type: ignore[arg-type]
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [dbname]
            ).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            log.info("created database %s", dbname)
            return True
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable.at(url, exc) from exc


def schema_sql() -> str:
    """All schema files in order (each service area owns one ``NN_<area>.sql``)."""
    folder = resources.files("neurostream").joinpath("sql")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return "\n".join(f.read_text() for f in files)


def timescale_statements(available: bool) -> list[str]:
    """Statements that turn time-series tables into hypertables, if Timescale exists."""
    if not available:
        return []
    stmts = ["CREATE EXTENSION IF NOT EXISTS timescaledb"]
    for table, column in HYPERTABLES.items():
        stmts.append(
            f"SELECT create_hypertable('{table}', '{column}', "
            "if_not_exists => TRUE, migrate_data => TRUE)"
        )
    return stmts


async def migrate(pool: AsyncConnectionPool) -> bool:
    """Create or update the schema; returns whether hypertables are in use."""
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", [_MIGRATION_LOCK])
        try:
            await conn.execute(schema_sql())
            cur = await conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            )
            available = await cur.fetchone() is not None
            for stmt in timescale_statements(available):
                await conn.execute(stmt)
            await conn.commit()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [_MIGRATION_LOCK])
            await conn.commit()
    return available


async def open_pool(
    url: str, *, max_size: int = 8, migrate_schema: bool = True, autocommit: bool = False
) -> AsyncConnectionPool:
    """Open the process's pool (checking the server is up) and migrate the schema.

    ``autocommit`` suits hot paths whose writes are single statements (one round trip
    instead of statement + COMMIT); multi-statement writes still use ``conn.transaction()``.
    """
    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=10,
        kwargs={"autocommit": autocommit},
    )
    try:
        await pool.open(wait=True, timeout=10)
    except Exception as exc:  # psycopg_pool raises PoolTimeout wrapping the cause
        await pool.close()
        raise DatabaseUnavailable.at(url, exc) from exc
    if migrate_schema:
        await migrate(pool)
    return pool
