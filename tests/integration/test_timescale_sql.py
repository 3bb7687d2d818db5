"""The TimescaleDB path of the migrations, as far as plain PostgreSQL can check it.

``create_hypertable`` needs the time column in every unique index (the primary key first);
the scratch database has the real schema, so its catalog says whether each statement
``timescale_statements(True)`` emits would be accepted.
"""

from __future__ import annotations

import re

import pytest

from neurostream.db import HYPERTABLES, timescale_statements

pytestmark = pytest.mark.integration

_KEY_COLUMNS = """
SELECT tc.constraint_name, tc.constraint_type, array_agg(kcu.column_name::text)
FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage kcu
  ON kcu.constraint_name = tc.constraint_name AND kcu.table_name = tc.table_name
 AND kcu.table_schema = tc.table_schema
WHERE tc.table_schema = 'public' AND tc.table_name = %s
  AND tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE')
GROUP BY tc.constraint_name, tc.constraint_type
"""


def test_without_timescale_nothing_is_emitted() -> None:
    assert timescale_statements(False) == []


def test_every_time_series_table_becomes_a_hypertable_on_its_time_column() -> None:
    stmts = timescale_statements(True)
    assert stmts[0] == "CREATE EXTENSION IF NOT EXISTS timescaledb"
    calls = {
        m.group(1): m.group(2)
        for s in stmts[1:]
        if (m := re.search(r"create_hypertable\('(\w+)', '(\w+)'", s))
    }
    assert calls == HYPERTABLES
    assert all("if_not_exists => TRUE" in s and "migrate_data => TRUE" in s for s in stmts[1:])


async def test_hypertable_time_columns_fit_the_schema(pool) -> None:
    async with pool.connection() as conn:
        for table, column in HYPERTABLES.items():
            cur = await conn.execute(
                "SELECT data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %s AND column_name = %s",
                [table, column],
            )
            row = await cur.fetchone()
            assert row is not None, f"{table}.{column} does not exist"
            assert row[0].startswith("timestamp"), f"{table}.{column} is {row[0]}"
            assert row[1] == "NO", f"{table}.{column} must be NOT NULL to partition on"
            keys = await (await conn.execute(_KEY_COLUMNS, [table])).fetchall()
            for name, kind, columns in keys:
                assert column in columns, (
                    f"{table}: {kind} {name} {columns} lacks {column}; "
                    "create_hypertable would refuse it"
                )
