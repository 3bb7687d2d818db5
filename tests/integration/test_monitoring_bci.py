"""``GET /bci`` and the dashboard's speller panel against real PostgreSQL.

Sessions, decisions and trial truth are written with SQL, as the producer, the decider and
the label collector write them. Every expected number is computed here from its definition
(Wolpaw's formula, the paradigm's timing, the decisions' spacing), not from
``neurostream.decisions``, so a wrong formula there fails here too.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from monitoring_api.app import create_app
from monitoring_api.settings import MonitoringSettings
from neurostream.decisions import SpellerLayout
from neurostream.settings import CoreSettings
from tests.factories import app_client, unique
from tests.monitoring_support import STEP_S, browser, insert_predictions, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
GRID = SpellerLayout.grid()  # 6x6: rows coded 1..6, columns 7..12
SMALL = SpellerLayout.grid(3, 3, "ABCDEFGHI")
SOA, PAUSE = 0.175, 1.5
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def wolpaw(n: int, p: float) -> float:
    """Bits per selection, Wolpaw et al. (2002), written out again for the test."""
    if p <= 1 / n:
        return 0.0
    bits = math.log2(n) + p * math.log2(p)
    return bits + ((1 - p) * math.log2((1 - p) / (n - 1)) if p < 1 else 0.0)


async def add_session(conn: Any, service: str, session: str, paradigm: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO sessions (session_id, service, board, fs, channels, paradigm)
        VALUES (%s, %s, 'synthetic', 250, '["Pz"]', %s)""",
        [session, service, json.dumps(paradigm)],
    )


async def add_decision(
    conn: Any,
    service: str,
    session: str,
    trial: int,
    rule: str,
    layout: SpellerLayout,
    symbol_index: int,
    *,
    repetitions: int,
    versions: list[int],
    at: datetime,
    codes: list[int] | None = None,
) -> None:
    codes = codes if codes is not None else list(layout.targets(symbol_index))
    await conn.execute(
        """INSERT INTO decisions (session_id, trial, rule, service, symbol_index, symbol, codes,
            posterior, repetitions, epochs, model_version_ids, evidence, decided_at, worker_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, 0.97, %s, %s, %s, '{}', %s, 'w-test')""",
        [
            session,
            trial,
            rule,
            service,
            symbol_index,
            layout.symbols[symbol_index],
            codes,
            repetitions,
            repetitions * len(layout.codes),
            versions,
            at,
        ],
    )


async def add_truth(conn: Any, session: str, trial: int, layout: SpellerLayout, index: int) -> None:
    await conn.execute(
        "INSERT INTO trials (session_id, trial, targets, symbol) VALUES (%s, %s, %s, %s)",
        [session, trial, list(layout.targets(index)), layout.symbols[index]],
    )


async def add_version(conn: Any, name: str) -> int:
    await conn.execute("INSERT INTO models (name, family) VALUES (%s, 'lda')", [name])
    cur = await conn.execute(
        """INSERT INTO model_versions (model_name, version, family, feature_pipeline, sha256,
            artifact, artifact_size) VALUES (%s, 1, 'lda', 'erp@1', 'x', '\\x00', 1)
        RETURNING id""",
        [name],
    )
    return int((await cur.fetchone())[0])


@pytest.fixture(scope="module")
async def speller(core: CoreSettings) -> dict[str, Any]:
    """Service S: A (6x6, paradigm timing; fixed-10 9/10 right, posterior 8/10 at 4
    repetitions on average), B (6x6, no soa_s: measured timing; the version changes, one
    trial without truth), C (3x3, 3/4 right), F (predictions, no decisions). Service S2:
    D (decisions, no speller layout), E (predictions, no decisions)."""
    from neurostream.db import open_pool

    service, other = unique("spell"), unique("plain")
    a, b, c, d, e, f = (unique(k) for k in "abcdef")
    spec = {"kind": "speller", "speller": GRID.describe(), "repetitions": 10}
    pool = await open_pool(core.database_url, max_size=1)
    async with pool.connection() as conn:
        v1, v2 = await add_version(conn, unique("m")), await add_version(conn, unique("m"))
        await add_session(conn, service, a, spec | {"soa_s": SOA, "trial_pause_s": PAUSE})
        await add_session(conn, service, b, spec)
        await add_session(
            conn,
            service,
            c,
            {"kind": "speller", "speller": SMALL.describe(), "soa_s": 0.2, "trial_pause_s": 1.0},
        )
        await add_session(conn, other, d, {"kind": "oddball", "soa_s": 0.25})
        await add_session(conn, other, e, {"kind": "oddball"})
        await add_session(conn, service, f, {"kind": "oddball"})
        # A: truth symbol 3*t + 1 for trial t; fixed-10 misses trial 4 and names trial 7's
        # codes column first (still right: a set); posterior misses trials 4 and 8.
        reps = [2, 3, 4, 5, 6, 2, 3, 4, 5, 6]
        for t in range(10):
            truth = 3 * t + 1
            await add_truth(conn, a, t, GRID, truth)
            fixed = (truth + 1) % 36 if t == 4 else truth
            codes = list(GRID.targets(truth))[::-1] if t == 7 else None
            at = T0 + timedelta(seconds=22.5 * t)
            await add_decision(
                conn,
                service,
                a,
                t,
                "fixed-10",
                GRID,
                fixed,
                repetitions=10,
                versions=[v1] * 120,
                at=at,
                codes=codes,
            )
            dyn = (truth + 6) % 36 if t in (4, 8) else truth
            await add_decision(
                conn,
                service,
                a,
                t,
                "posterior-0.95-max10",
                GRID,
                dyn,
                repetitions=reps[t],
                versions=[v1] * reps[t] * 12,
                at=at - timedelta(seconds=1.0 + t % 2),
            )
        # B: versions [v1]x3, [v1]x3, [v1, v2, v2], [v1, v2] (a tie: the last listed), [v2].
        b_versions = [[v1] * 3, [v1] * 3, [v1, v2, v2], [v1, v2], [v2]]
        for t in range(5):
            if t < 4:
                await add_truth(conn, b, t, GRID, t)
            await add_decision(
                conn,
                service,
                b,
                t,
                "fixed-10",
                GRID,
                t,
                repetitions=10,
                versions=b_versions[t],
                at=T0 + timedelta(hours=1, seconds=20 * t),
            )
        for t in range(4):
            await add_truth(conn, c, t, SMALL, t)
            await add_decision(
                conn,
                service,
                c,
                t,
                "fixed-10",
                SMALL,
                t if t else 8,
                repetitions=5,
                versions=[v2],
                at=T0 + timedelta(hours=2, seconds=7 * t),
            )
        await add_decision(
            conn, other, d, 0, "fixed-10", GRID, 0, repetitions=10, versions=[v1], at=T0
        )
        # Predictions, so the dashboard's session selector lists the sessions.
        for k, sid in enumerate((a, b, c, f)):
            t0 = T0.timestamp() + 3600 * k + np.arange(5) * STEP_S
            await insert_predictions(conn, service, sid, range(5), t0, [0.7] * 5, version=v1)
        t0 = T0.timestamp() + np.arange(5) * STEP_S
        await insert_predictions(conn, other, e, range(5), t0, [0.7] * 5, version=v1)
    await pool.close()
    return {"service": service, "other": other, "v1": v1, "v2": v2} | dict(
        zip("abcdef", (a, b, c, d, e, f), strict=True)
    )


@pytest.fixture(scope="module")
async def api(core: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(core, MonitoringSettings(evaluator=False))
    async with app_client(app, base_url="http://monitoring", timeout=120) as client:
        yield client


def rows_of(body: dict[str, Any]) -> dict[tuple[str, int | None, str], dict[str, Any]]:
    return {(r["session_id"], r["model_version_id"], r["rule"]): r for r in body["rows"]}


async def test_accuracy_chance_and_itr_per_session_version_and_rule(
    api: httpx.AsyncClient, speller: dict[str, Any]
) -> None:
    s, a, b, c = speller["service"], speller["a"], speller["b"], speller["c"]
    v1, v2 = speller["v1"], speller["v2"]
    r = await api.get("/bci", params={"service": s})
    assert r.status_code == 200, r.text
    body = r.json()
    rows = rows_of(body)
    assert set(rows) == {
        (a, v1, "fixed-10"),
        (a, v1, "posterior-0.95-max10"),
        (b, v1, "fixed-10"),
        (b, v2, "fixed-10"),
        (c, v2, "fixed-10"),
    }
    assert body["notes"] == [] and body["timing"] == "auto"

    fixed = rows[(a, v1, "fixed-10")]
    paradigm_s = 10 * 12 * SOA + PAUSE  # 22.5 s: 10 repetitions of 12 flashes, then a pause
    assert (fixed["decisions"], fixed["with_truth"], fixed["correct"]) == (10, 10, 9)
    assert fixed["accuracy"] == pytest.approx(0.9)
    assert fixed["chance"] == pytest.approx(1 / 36) and fixed["n_symbols"] == 36
    assert fixed["mean_repetitions"] == 10
    assert fixed["timing"] == "paradigm"
    assert fixed["seconds_per_selection"] == pytest.approx(paradigm_s)
    assert fixed["seconds_paradigm"] == pytest.approx(22.5)
    assert fixed["seconds_measured"] == pytest.approx(22.5)  # 9 gaps of 22.5 s
    bits = wolpaw(36, 0.9)
    assert bits == pytest.approx(4.1880, abs=1e-4)
    assert fixed["bits_per_selection"] == pytest.approx(bits)
    assert fixed["bits_per_min"] == pytest.approx(bits * 60 / 22.5)  # 11.17
    assert fixed["model_version"] is not None and fixed["model_version"].endswith(":1")

    dyn = rows[(a, v1, "posterior-0.95-max10")]
    assert (dyn["decisions"], dyn["correct"], dyn["accuracy"]) == (10, 8, pytest.approx(0.8))
    assert dyn["mean_repetitions"] == pytest.approx(4.0)
    dyn_s = 4.0 * 12 * SOA + PAUSE  # 9.9 s: the rule's repetitions, not the paradigm's 10
    assert dyn["seconds_per_selection"] == pytest.approx(dyn_s)
    assert dyn["bits_per_min"] == pytest.approx(wolpaw(36, 0.8) * 60 / dyn_s)
    assert dyn["bits_per_min"] > fixed["bits_per_min"]  # fewer flashes outweigh 0.1 accuracy
    # Decided 1 or 2 s before each 22.5 s mark: the first at -1 s, the last (t=9) at -2 s.
    assert dyn["seconds_measured"] == pytest.approx((22.5 * 9 - 2 + 1) / 9)

    # B: no soa_s in its paradigm, so the decisions' spacing (20 s) is the time.
    b1, b2 = rows[(b, v1, "fixed-10")], rows[(b, v2, "fixed-10")]
    assert (b1["decisions"], b1["correct"], b1["accuracy"]) == (2, 2, 1.0)
    assert (b2["decisions"], b2["with_truth"], b2["correct"]) == (3, 2, 2)  # trial 4: no truth
    for row in (b1, b2):
        assert row["timing"] == "measured" and row["seconds_paradigm"] is None
        assert row["seconds_per_selection"] == pytest.approx(20.0)
        assert row["bits_per_selection"] == pytest.approx(math.log2(36))
        assert row["bits_per_min"] == pytest.approx(math.log2(36) * 3)

    small = rows[(c, v2, "fixed-10")]
    assert (small["n_symbols"], small["chance"]) == (9, pytest.approx(1 / 9))
    assert small["accuracy"] == pytest.approx(0.75)
    assert small["seconds_per_selection"] == pytest.approx(5 * 6 * 0.2 + 1.0)  # 7 s
    assert small["bits_per_min"] == pytest.approx(wolpaw(9, 0.75) * 60 / 7.0)

    # Overall per rule, split where Wolpaw's N differs.
    overall = {(o["rule"], o["n_symbols"]): o for o in body["overall"]}
    assert set(overall) == {("fixed-10", 36), ("fixed-10", 9), ("posterior-0.95-max10", 36)}
    pooled = overall[("fixed-10", 36)]
    assert (pooled["decisions"], pooled["with_truth"], pooled["correct"]) == (15, 14, 13)
    assert pooled["sessions"] == 2 and pooled["model_version_ids"] == sorted([v1, v2])
    assert pooled["timing"] == "mixed"
    seconds = (22.5 * 10 + 20.0 * 5) / 15
    assert pooled["seconds_per_selection"] == pytest.approx(seconds)
    assert pooled["bits_per_selection"] == pytest.approx(wolpaw(36, 13 / 14))
    assert pooled["bits_per_min"] == pytest.approx(wolpaw(36, 13 / 14) * 60 / seconds)
    assert overall[("posterior-0.95-max10", 36)]["bits_per_min"] == pytest.approx(
        dyn["bits_per_min"]
    )
    print(
        f"A fixed-10: acc 0.9 vs chance {1 / 36:.3f}, {bits:.3f} bits/sel, "
        f"{fixed['bits_per_min']:.2f} bits/min; posterior: acc 0.8 at 4.0 reps, "
        f"{dyn['bits_per_min']:.2f} bits/min; pooled fixed-10 13/14, "
        f"{pooled['bits_per_min']:.2f} bits/min"
    )


async def test_filters_and_timing(api: httpx.AsyncClient, speller: dict[str, Any]) -> None:
    a, b = speller["a"], speller["b"]
    only = (await api.get("/bci", params={"session_id": a, "timing": "measured"})).json()
    assert {r["session_id"] for r in only["rows"]} == {a}
    rows = {r["rule"]: r for r in only["rows"]}
    assert rows["fixed-10"]["timing"] == "measured"
    assert rows["fixed-10"]["seconds_per_selection"] == pytest.approx(22.5)
    assert rows["posterior-0.95-max10"]["seconds_per_selection"] == pytest.approx(
        (22.5 * 9 - 1) / 9
    )
    # B states no soa_s: asked for the paradigm's time it has none, and no bits/min.
    forced = (await api.get("/bci", params={"session_id": b, "timing": "paradigm"})).json()
    assert forced["rows"] and all(
        r["seconds_per_selection"] is None and r["timing"] is None and r["bits_per_min"] is None
        for r in forced["rows"]
    )
    assert all(r["bits_per_selection"] == pytest.approx(math.log2(36)) for r in forced["rows"])
    assert forced["overall"][0]["seconds_per_selection"] is None
    # Without filters every service's sessions come, ours among them.
    everything = (await api.get("/bci", params={"limit": 1000})).json()
    assert {speller[k] for k in "abc"} <= {r["session_id"] for r in everything["rows"]}


async def test_sessions_without_speller_decisions_and_bad_input(
    api: httpx.AsyncClient, speller: dict[str, Any]
) -> None:
    other = (await api.get("/bci", params={"service": speller["other"]})).json()
    assert other["rows"] == [] and other["overall"] == []
    assert len(other["notes"]) == 1 and speller["d"] in other["notes"][0]
    assert "speller layout" in other["notes"][0]
    none = (await api.get("/bci", params={"session_id": speller["e"]})).json()
    assert none["rows"] == [] and "has no decisions" in none["notes"][0]
    missing = await api.get("/bci", params={"session_id": "no-such-session"})
    assert missing.status_code == 404 and missing.json()["detail"].startswith("session_id:")
    for params, field in (
        ({"session_id": "bad id!"}, "session_id"),
        ({"service": "-x"}, "service"),
        ({"timing": "sometimes"}, "timing"),
        ({"limit": 0}, "limit"),
    ):
        r = await api.get("/bci", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["detail"].startswith(f"{field}:"), r.json()


_READ = """
const rect = (id) => document.getElementById(id).getBoundingClientRect();
const cells = (tr) => Object.fromEntries([...tr.querySelectorAll("td[data-k]")]
  .map((td) => [td.dataset.k, td.textContent]));
return {
  hidden: document.getElementById("bci-section").hidden,
  emptyHidden: document.getElementById("bci-empty").hidden,
  rows: [...document.querySelectorAll("#bci-table tr:not(.overall)")].map((tr) =>
    [tr.dataset.session, tr.dataset.version, tr.dataset.rule, cells(tr)]),
  overall: [...document.querySelectorAll("#bci-table tr.overall")].map((tr) =>
    [tr.dataset.rule, tr.dataset.symbols, cells(tr)]),
  top: {performance: rect("performance-section").top, alerts: rect("alerts-section").top,
        bci: rect("bci-section").top},
};
"""
SHOWN = {
    "accuracy": 3,
    "chance": 3,
    "mean_repetitions": 1,
    "seconds_per_selection": 2,
    "bits_per_selection": 3,
    "bits_per_min": 2,
}


def shown(row: dict[str, Any]) -> dict[str, str]:
    """What the panel prints for an API row (the page's fmt: fixed decimals)."""
    out = {k: "–" if row[k] is None else f"{row[k]:.{d}f}" for k, d in SHOWN.items()}
    return out | {
        "decisions": str(row["decisions"]),
        "with_truth": str(row["with_truth"]),
        "timing": row["timing"] or "–",
    }


async def test_dashboard_bci_panel_shows_accuracy_chance_and_itr(
    core: CoreSettings, speller: dict[str, Any]
) -> None:
    s, a = speller["service"], speller["a"]
    async with (
        serve(create_app(core, MonitoringSettings(evaluator=False))) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
        browser() as page,
    ):
        body = (await client.get("/bci", params={"service": s, "limit": 50})).json()
        ready = (
            "return document.getElementById('status').textContent.startsWith('updated')"
            " && document.querySelectorAll('#bci-table tr').length > 0"
        )
        await page.open(f"{url}/dashboard?service={s}&session=&refresh=60")
        await page.until(ready)
        got = await page.run(_READ)
        await page.screenshot("/tmp/dashboard-bci.png")
        assert got["hidden"] is False
        want = {
            (r["session_id"], str(r["model_version_id"]), r["rule"]): shown(r) for r in body["rows"]
        }
        assert {(sid, v, rule): c for sid, v, rule, c in got["rows"]} == want
        fixed = next(c for sid, _, rule, c in got["rows"] if sid == a and rule == "fixed-10")
        # The numbers themselves, from the formula: 0.900 vs 0.028, 4.188 bits, 11.17/min.
        assert (fixed["accuracy"], fixed["chance"]) == ("0.900", "0.028")
        assert fixed["bits_per_selection"] == f"{wolpaw(36, 0.9):.3f}" == "4.188"
        assert fixed["bits_per_min"] == f"{wolpaw(36, 0.9) * 60 / 22.5:.2f}" == "11.17"
        assert {(rule, n): c for rule, n, c in got["overall"]} == {
            (o["rule"], str(o["n_symbols"])): shown(o) for o in body["overall"]
        }
        for section in ("performance", "alerts", "bci"):  # still in the first 1400x900 screen
            assert 0 <= got["top"][section] < 900, got["top"]

        # One session selected: its rows only, beside the service's overall rows.
        await page.open(f"{url}/dashboard?service={s}&session={a}&refresh=60")
        await page.until(ready)
        one = await page.run(_READ)
        assert {sid for sid, *_ in one["rows"]} == {a} and len(one["rows"]) == 2
        assert len(one["overall"]) == 3

        # A session of the service without decisions: the panel says so, overall rows stay.
        await page.open(f"{url}/dashboard?service={s}&session={speller['f']}&refresh=60")
        await page.until(
            "return document.getElementById('status').textContent.startsWith('updated')"
            " && document.querySelectorAll('#bci-table tr.overall').length > 0"
        )
        plain = await page.run(_READ)
        assert plain["hidden"] is False and plain["emptyHidden"] is False  # the message shows
        assert plain["rows"] == [] and len(plain["overall"]) == 3

        # A service without speller decisions: no panel.
        await page.open(f"{url}/dashboard?service={speller['other']}&refresh=60")
        await page.until("return document.getElementById('status').textContent.startsWith('up')")
        assert (await page.run(_READ))["hidden"] is True
        print(
            f"dashboard BCI panel: {len(got['rows'])} rows, A fixed-10 {fixed}, tops {got['top']}"
        )
