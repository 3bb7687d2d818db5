"""Evidently ``DataDriftPreset`` reports over the same band-power features as the detector.

The streaming detector is the fast path; Evidently is the thorough, human-readable one
(per-column tests chosen by column type and size, distribution plots). Both see identical
feature frames, so their verdicts can be compared. Evidently is imported lazily: it is
heavy and only report requests need it.
"""

from __future__ import annotations

from typing import Any

from monitoring_api.detector import Features


def _snapshot(ref: Features, cur: Features, drift_share: float) -> Any:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    report = Report([DataDriftPreset(drift_share=drift_share)])
    return report.run(current_data=cur.frame(), reference_data=ref.frame())


def report_json(ref: Features, cur: Features, drift_share: float = 0.5) -> dict[str, Any]:
    """The snapshot as a dict (``metrics``: drifted-columns count/share, per-column drift)."""
    out: dict[str, Any] = _snapshot(ref, cur, drift_share).dict()
    return out


def report_html(ref: Features, cur: Features, drift_share: float = 0.5) -> str:
    """A self-contained HTML page (scripts inlined; no CDN needed)."""
    html: str = _snapshot(ref, cur, drift_share).get_html_str(as_iframe=False)
    return html


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Drifted count/share and per-column p-values out of the report's metric list."""
    out: dict[str, Any] = {"drifted_count": None, "drifted_share": None, "columns": {}}
    for m in report.get("metrics", []):
        config = m.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith("DriftedColumnsCount"):
            out["drifted_count"] = m["value"]["count"]
            out["drifted_share"] = m["value"]["share"]
        elif kind.endswith("ValueDrift"):
            out["columns"][config["column"]] = {
                "method": config.get("method"),
                "threshold": config.get("threshold"),
                "value": m["value"],
            }
    return out
