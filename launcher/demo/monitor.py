"""The demo's drift act: an alert rule before the session, drift and alerts after it.

Session 1 shifts some channels (gain) in its second half, as a loose electrode or a
changed montage would. The monitoring API compares each sliding current window with the
session's first seconds; the channels that drift, and the alert the rule fires, are
printed from the API.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx

from launcher.demo.options import DemoOptions

RULE = "demo-drift-share"


async def _ok(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise RuntimeError(
            f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text[:300]}"
        )
    return resp.json()


def monitoring_env(opts: DemoOptions) -> dict[str, str]:
    """Reference = the session's first part; current = a sliding window over the rest."""
    first = opts.duration_s * (opts.shift_at or 0.5)
    return {
        "NEUROSTREAM_MON_REFERENCE_S": f"{first * 0.8:.1f}",
        "NEUROSTREAM_MON_CURRENT_WINDOW_S": f"{first * 0.6:.1f}",
        "NEUROSTREAM_MON_EVALUATE_EVERY_S": "3",
    }


async def add_rule(mon: httpx.AsyncClient, service: str) -> None:
    rules = await _ok(await mon.get("/alerts/rules"))
    if any(r["name"] == RULE for r in rules):
        return
    await _ok(
        await mon.post(
            "/alerts/rules",
            json={
                "name": RULE,
                "service": service,
                "metric": "drift_share",
                "comparison": ">",
                "threshold": 0.05,
                "window_s": 60,
            },
        )
    )


async def drift_after(
    mon: httpx.AsyncClient, service: str, since: datetime | None = None
) -> dict[str, Any]:
    """Evaluate the latest window now; wait for the rule's alert (fired after ``since``, so
    not an earlier run's); return both."""
    drift = await _ok(await mon.post(f"/drift/evaluate/{service}"))
    alerts: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alerts = [
            a
            for a in await _ok(await mon.get("/alerts", params={"service": service}))
            if a["rule_name"] == RULE
            and (since is None or datetime.fromisoformat(a["fired_at"]) >= since)
        ]
        if alerts:
            break
        await asyncio.sleep(1)
    return {"drift": drift, "alerts": alerts}


def print_drift(found: dict[str, Any], shifted: list[str]) -> None:
    drift = found["drift"]
    print(
        f"\n  drift (latest window vs the session's start): share of features drifted "
        f"{drift['share']:.2f}, MMD² {drift['mmd']:.3f}"
    )
    print(f"  channels shifted by the producer: {', '.join(shifted)}")
    print(f"  channels the monitor flags      : {', '.join(drift['drifted_channels']) or '-'}")
    for a in found["alerts"][:3]:
        print(
            f"  alert {a['rule_name']}: {a['metric']} {a['value']:.2f} {a['comparison']} "
            f"{a['threshold']} -> {a['state']} at {a['fired_at']}"
        )
