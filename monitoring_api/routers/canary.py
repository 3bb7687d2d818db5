"""A service's canary compared with its champion: live figures per arm and the verdict.

The figures are those the canary judge (``monitoring_api/canary_judge.py``) applies the
rule to: each arm over the sessions that started on it, since the canary started (to its
end, once ended). Starting and stopping a canary is the queue manager's
(``PUT``/``DELETE /services/{name}/canary`` there).
"""

from __future__ import annotations

from fastapi import APIRouter

from monitoring_api.canary_judge import assess
from monitoring_api.deps import Pool, ServicePath
from monitoring_api.schemas import CanaryArmOut, CanaryStatusOut
from neurostream import registry
from neurostream.canary import ArmFigures

router = APIRouter(tags=["canary"])


def _arm(arm: str, version_id: int, f: ArmFigures) -> CanaryArmOut:
    return CanaryArmOut(
        arm=arm,
        version_id=version_id,
        sessions=f.sessions,
        windows=f.windows,
        rejected=f.rejected,
        gated=f.gated,
        errors=f.errors,
        rejection_rate=f.rejection_rate,
        error_rate=f.error_rate,
        labels=f.labels,
        estimated_roc_auc=f.estimated.get("expected_roc_auc"),
        estimated_balanced_accuracy=f.estimated.get("expected_balanced_accuracy"),
        estimated_accuracy=f.estimated.get("expected_accuracy"),
        measured_roc_auc=f.measured.get("roc_auc"),
        measured_balanced_accuracy=f.measured.get("balanced_accuracy"),
        measured_accuracy=f.measured.get("accuracy"),
        drift_share=f.drift_share,
    )


@router.get(
    "/services/{name}/canary",
    response_model=CanaryStatusOut,
    responses={404: {"description": "The service never ran a canary"}},
)
async def canary_status(name: ServicePath, pool: Pool) -> CanaryStatusOut:
    """The service's latest canary against its champion, with the rule's verdict and why."""
    async with pool.connection() as conn:
        canary = await registry.require_canary(conn, name)
        a = await assess(conn, canary)
        n = await registry.canary_counts(conn, canary["id"])
    return CanaryStatusOut(
        service=name,
        canary_id=canary["id"],
        model_name=canary["model_name"],
        ref=canary["ref"],
        version=canary["version"],
        version_id=canary["version_id"],
        champion_version_id=canary["champion_version_id"],
        share=canary["share"],
        status=canary["status"],
        reason=canary["reason"],
        started_at=canary["started_at"],
        ended_at=canary["ended_at"],
        rule=a.rule.model_dump(),
        canary=_arm("canary", canary["version_id"], a.figures["canary"]),
        champion=_arm("champion", canary["champion_version_id"], a.figures["champion"]),
        verdict=a.verdict.action,
        verdict_reasons=list(a.verdict.reasons),
        switched_sessions=n["switched"],
        failed_windows=n["failed"],
    )
