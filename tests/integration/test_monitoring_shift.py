"""A session whose second half is shifted on two channels, watched by the monitoring API.

Windows arrive in 5-second chunks (as the archiver would write them) while the API's own
background evaluator runs: the per-channel drift series rises for C3 and C4 only, the
drift-share alert fires to a real local webhook receiver (and clears when the rule is
raised), the dashboard shows it in headless Chromium (above the fold, each feature once,
even after the on-demand evaluation the demo makes), and Evidently judges the same pair.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest

from monitoring_api.app import create_app
from monitoring_api.settings import MonitoringSettings
from neurostream.settings import CoreSettings
from tests.factories import unique
from tests.monitoring_support import (
    CHANNELS,
    STEP_S,
    browser,
    cut,
    insert_labels,
    insert_predictions,
    insert_windows,
    serve,
    session_stream,
    webhook_receiver,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
SECONDS, SHIFT_AT, CHUNK_S = 60.0, 30.0, 5.0
SHIFTED = ["C3", "C4"]
AUTH = {"Authorization": "Bearer test-token-0123456789abcdef"}


@pytest.fixture(scope="module")
async def api(core: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    settings = MonitoringSettings(
        evaluate_every_s=0.3,
        current_window_s=10,
        reference_s=15,
        min_windows=20,
        webhook_retries=2,
        webhook_backoff_s=0.05,
        webhook_timeout_s=2,
    )
    async with (
        serve(create_app(core, settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=120) as client,
    ):
        yield client


async def eventually(check: Any, wait_s: float = 60) -> Any:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if out := await check():
            return out
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


async def test_shifted_channels_drift_alert_fires_dashboard_and_evidently_show_it(
    api: httpx.AsyncClient, pool: Any
) -> None:
    service, session = unique("mon"), unique("sess")
    stream = session_stream(
        SECONDS, shift_after_s=SHIFT_AT, shift_channels=SHIFTED, gain=2.5, seed=7
    )
    n_total = int((SECONDS - 1) / STEP_S)
    # Whole milliseconds, so the stored window times and the iso() bounds round alike.
    t_first = round(time.time() - SECONDS - 5, 3)
    seqs = np.arange(n_total)
    t0 = t_first + seqs * STEP_S
    rng = np.random.default_rng(0)
    labels = (rng.random(n_total) < 0.3).astype(int)
    proba = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.15, n_total), 0.01, 0.99)
    with webhook_receiver() as (hook_url, received):
        rule = await api.post(
            "/alerts/rules",
            headers=AUTH,
            json={
                "name": f"{service}-drift",
                "service": service,
                "metric": "drift_share",
                "comparison": ">",
                "threshold": 0.15,
                "window_s": 2.0,
                "webhook_url": hook_url,
            },
        )
        assert rule.status_code == 201, rule.text
        per_chunk = int(CHUNK_S / STEP_S)
        for first in range(0, n_total, per_chunk):
            idx = seqs[first : first + per_chunk]
            async with pool.connection() as conn:
                await insert_windows(
                    conn, service, session, cut(stream, first, len(idx)), idx, t0[idx]
                )
                await insert_predictions(conn, service, session, idx, t0[idx], proba[idx])
                if first < n_total // 2:  # labels arrive for the first half only
                    await insert_labels(conn, session, idx, labels[idx])
            end = t0[idx[-1]]
            if end - t_first >= 25:  # current window lies after the 15 s reference

                async def evaluated(end: float = end) -> bool:
                    r = await api.get(
                        "/drift/metrics",
                        params={
                            "service": service,
                            "scope": "overall",
                            "name": "share",
                            "start": iso(end - 0.01),
                        },
                    )
                    return bool(r.json())

                await eventually(evaluated)

        # The per-channel series: flat before the shift, up for C3/C4 only after it.
        rows = (
            await api.get("/drift/metrics", params={"service": service, "scope": "channel"})
        ).json()
        times = sorted({r["time"] for r in rows})
        assert len(times) >= 6
        shift_ts = t_first + SHIFT_AT
        before = [r for r in rows if datetime.fromisoformat(r["time"]).timestamp() <= shift_ts]
        after = [r for r in rows if datetime.fromisoformat(r["time"]).timestamp() >= shift_ts + 10]
        assert before and after
        assert not any(r["drifted"] for r in before)
        for ch in SHIFTED:
            assert all(r["drifted"] for r in after if r["name"] == ch)
        others = [r for r in after if r["name"] not in SHIFTED]
        assert sum(r["drifted"] for r in others) <= len(others) // 10
        mean_d = {
            ch: np.mean([r["statistic"] for r in after if r["name"] == ch]) for ch in CHANNELS
        }
        print("mean KS D after the shift:", {k: round(float(v), 3) for k, v in mean_d.items()})
        assert min(mean_d[c] for c in SHIFTED) > 2 * max(
            v for c, v in mean_d.items() if c not in SHIFTED
        )
        mmd = (
            await api.get(
                "/drift/metrics", params={"service": service, "scope": "overall", "name": "mmd"}
            )
        ).json()
        mmd_before = [
            r["statistic"] for r in mmd if datetime.fromisoformat(r["time"]).timestamp() <= shift_ts
        ]
        assert max(mmd_before) < mmd[-1]["statistic"]

        # The alert fired once, to the receiver; raising the threshold clears it.
        fired = await eventually(lambda: _events(received, "fired"))
        assert fired[0]["rule"]["name"] == f"{service}-drift" and fired[0]["value"] > 0.15
        alerts = (await api.get("/alerts", params={"service": service})).json()
        assert [a["state"] for a in alerts] == ["firing"]
        assert alerts[0]["webhook_status"].startswith("fired: delivered")
        # As the demo does after its session: evaluate the latest window on demand, while
        # the loop passes over the same, no longer growing, archive.
        assert (await api.post(f"/drift/evaluate/{service}", headers=AUTH)).status_code == 200
        await asyncio.sleep(1)
        page_url = f"{str(api.base_url).rstrip('/')}/dashboard?service={service}&refresh=60"
        async with browser() as page:
            await _dashboard_shows(page, page_url, service, pool, f"{service}-drift")
        body = {
            **{
                k: v
                for k, v in (await api.get(f"/alerts/rules/{rule.json()['id']}")).json().items()
                if k in ("name", "service", "metric", "comparison", "window_s", "webhook_url")
            },
            "threshold": 0.9,
        }
        assert (
            await api.put(f"/alerts/rules/{rule.json()['id']}", json=body, headers=AUTH)
        ).status_code == 200
        cleared = await eventually(lambda: _events(received, "cleared"))
        assert cleared[0]["alert_id"] == fired[0]["alert_id"]
        alerts = (await api.get("/alerts", params={"service": service})).json()
        assert alerts[0]["state"] == "cleared" and alerts[0]["cleared_at"] is not None
        async with browser() as page:  # what fires now only; the history on demand
            await page.open(page_url)
            await page.until(
                "return document.getElementById('status').textContent.startsWith('updated')"
            )
            assert await page.run("return document.querySelectorAll('#alerts tr').length") == 0
            await page.run("document.getElementById('alert-history').open = true")
            history = await page.until(
                "return [...document.querySelectorAll('#alerts-history tr')]"
                ".map((tr) => [tr.dataset.historyRule, tr.className])"
            )
            assert history == [[f"{service}-drift", "cleared"]]

    # The same pair through the detector on demand and through Evidently.
    pair = {
        "service": service,
        "reference_start": iso(t_first),
        "reference_end": iso(t_first + 15),
        "current_start": iso(t0[-1] - 10),
        "current_end": iso(t0[-1]),
    }
    ks = (await api.get("/drift/evaluate", params=pair)).json()
    assert ks["drifted_channels"] == SHIFTED and ks["share"] == pytest.approx(2 / 8)
    report = await api.get("/drift/report", params=pair)
    assert report.status_code == 200, report.text
    summary = report.json()["summary"]
    print("evidently:", summary["drifted_count"], summary["drifted_share"])
    cols = summary["columns"]
    assert len(cols) == 40
    drifted = {c for c, v in cols.items() if v["value"] < v["threshold"]}
    assert {f"{ch}:alpha" for ch in SHIFTED} <= drifted
    # Evidently tests each column at 0.05 without correction: a stray column may drift.
    assert len({c for c in drifted if c.split(":")[0] not in SHIFTED}) <= 3
    html = await api.get("/drift/report.html", params=pair)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<html" in html.text[:2000].lower() and "C3:alpha" in html.text


async def _events(received: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in received if r["event"] == event]


_READ = """
const rect = (id) => document.getElementById(id).getBoundingClientRect();
const text = (id) => document.getElementById(id).textContent;
const rows = (sel) => [...document.querySelectorAll(sel)];
return {
  viewport: [window.innerWidth, window.innerHeight],
  top: {performance: rect("performance-section").top, alerts: rect("alerts-section").top,
        heatmap: rect("heatmap").top},
  bottom: {performance: rect("performance-section").bottom, alerts: rect("alerts-section").bottom},
  predictions: text("total-predictions"),
  model: text("model-version"),
  auc: text("headline-auc"),
  features: rows("#feature-table tr").map((tr) => tr.dataset.feature),
  cells: rows("#heatmap td[data-feature]").map((td) => [td.dataset.feature, td.className]),
  channels: rows("#drift-table tr").map((tr) => [tr.dataset.channel, tr.className,
    tr.children[1].textContent]),
  firing: rows("#alerts tr").map((tr) => [tr.dataset.rule, tr.className]),
  performancePaths: rows("#chart-performance path").length,
  bciHidden: document.getElementById("bci-section").hidden,
};
"""


async def _dashboard_shows(page: Any, url: str, service: str, pool: Any, rule: str) -> None:
    """Headless Chromium at 1400x900 renders /dashboard; the DOM holds the numbers the DB
    holds, each feature once, and performance and alerts lie within the first screen."""
    async with pool.connection() as conn:
        n_pred = (
            await (
                await conn.execute("SELECT count(*) FROM predictions WHERE service = %s", [service])
            ).fetchone()
        )[0]
        c3 = (
            await (
                await conn.execute(
                    """SELECT statistic FROM drift_metrics WHERE service = %s AND scope = 'channel'
            AND name = 'C3' ORDER BY time DESC LIMIT 1""",
                    [service],
                )
            ).fetchone()
        )[0]
        named = await (  # other tests may have registered version id 1
            await conn.execute(
                "SELECT model_name || ':' || version FROM model_versions WHERE id = 1"
            )
        ).fetchone()
    await page.open(url)
    await page.until(
        "return document.getElementById('status').textContent.startsWith('updated')"
        " && document.querySelectorAll('#feature-table tr').length > 0"
    )
    got = await page.run(_READ)
    await page.screenshot("/tmp/dashboard.png")
    assert got["viewport"] == [1400, 900], got["viewport"]
    assert got["predictions"] == str(n_pred)
    assert got["model"] == (named[0] if named else "#1")
    features = got["features"]
    assert len(features) == len(set(features)) == len(CHANNELS) * 5, features  # once each
    assert sorted(c for c, _ in got["cells"]) == sorted(features)
    drifted_cells = {c for c, cls in got["cells"] if cls == "drifted"}
    assert {"C3:alpha", "C4:alpha"} <= drifted_cells
    assert {c.split(":")[0] for c in drifted_cells} <= set(SHIFTED)
    channels = {ch: (cls, float(d)) for ch, cls, d in got["channels"]}
    assert channels["C3"][0] == "drifted" and channels["C3"][1] == pytest.approx(c3, abs=1e-3)
    assert channels["Fz"][0] == ""
    assert got["firing"] == [[rule, "firing"]]
    assert got["auc"] not in ("", "–") and got["performancePaths"] >= 2
    assert got["bciHidden"] is True  # no speller decisions: no BCI panel
    for section in ("performance", "alerts"):  # visible in the first 1400x900 screen
        assert 0 <= got["top"][section] < 900, got["top"]
    print(
        f"dashboard: {n_pred} predictions, C3 KS D {c3:.3f}, alert {rule} firing, tops {got['top']}"
    )
