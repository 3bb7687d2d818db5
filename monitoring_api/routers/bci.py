"""BCI metrics of a speller's decisions: accuracy beside chance and Wolpaw's ITR.

The decider (``workers/decider.py``) writes one row to ``decisions`` per trial and stopping
rule; the producer's trial truth lands in ``trials``. Here they are joined and grouped per
session, model version and rule, with one overall row per rule: accuracy against
1 / n_symbols (the session's ``SpellerLayout``), and bits per selection and per minute
from ``neurostream.decisions``. The time a selection takes is the paradigm's by default:
a rule that stops after fewer repetitions is what makes a speller faster, and a simulated
paradigm keeps flashing to its maximum whatever a rule decided, so the spacing of the
decisions measures the paradigm, not the rule.

Accuracy by repetitions is not computed: a decision stores its final evidence only. Run
several fixed rules (``fixed:2,fixed:4,...``) and each one's row is that curve's point.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from psycopg.rows import dict_row

from monitoring_api.deps import Pool, ServiceFilter, SessionFilter
from monitoring_api.errors import NotFound
from monitoring_api.schemas import BciOut, BciRuleOverall, BciSessionRule
from neurostream.decisions import (
    SpellerLayout,
    itr_bits_per_min,
    seconds_per_selection,
    wolpaw_bits,
)
from neurostream.errors import NeurostreamError

router = APIRouter(tags=["bci"])
TimingQuery = Annotated[
    Literal["auto", "paradigm", "measured"],
    Query(description="Seconds per selection: from the paradigm, measured, or auto"),
]

_DECISIONS = """
WITH chosen AS (
    SELECT session_id, max(decided_at) AS last FROM decisions
    WHERE (%(service)s::text IS NULL OR service = %(service)s)
      AND (%(session)s::text IS NULL OR session_id = %(session)s)
    GROUP BY session_id ORDER BY last DESC LIMIT %(limit)s
)
SELECT d.session_id, d.service, d.trial, d.rule, d.symbol, d.codes, d.repetitions,
    d.model_version_ids, d.decided_at, s.paradigm, t.targets, t.symbol AS true_symbol
FROM decisions d
JOIN chosen c ON c.session_id = d.session_id
LEFT JOIN sessions s ON s.session_id = d.session_id
LEFT JOIN trials t ON t.session_id = d.session_id AND t.trial = d.trial
ORDER BY c.last DESC, d.session_id, d.rule, d.decided_at
"""
# A session is known once registered or once served (GET /sessions lists the served ones).
_KNOWN = """
SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = %s)
    OR EXISTS (SELECT 1 FROM predictions WHERE session_id = %s) AS known
"""
_LABELS = """
SELECT id, model_name || ':' || version AS label FROM model_versions WHERE id = ANY(%s)
"""


def decided_by(version_ids: Sequence[int] | None) -> int | None:
    """The most frequent version in a decision's evidence; a tie goes to the one listed last
    (the newest, when the list is in the order the evidence came)."""
    if not version_ids:
        return None
    counts = Counter(version_ids)
    top = max(counts.values())
    return next(v for v in reversed(version_ids) if counts[v] == top)


def is_correct(
    codes: Sequence[int], symbol: str | None, targets: Sequence[int], true_symbol: str | None
) -> bool:
    """A decision is right when its codes are the trial's targets (as a set) or when it names
    the trial's symbol."""
    return set(codes) == set(targets) or (symbol is not None and symbol == true_symbol)


@dataclass(frozen=True)
class Timing:
    """A session's speller layout and timing; ``soa_s`` None when the paradigm omits it."""

    layout: SpellerLayout
    soa_s: float | None
    trial_pause_s: float

    @classmethod
    def of(cls, paradigm: Mapping[str, Any]) -> Timing:
        """From ``sessions.paradigm``; ``ConfigError`` when it holds no speller layout."""
        soa = paradigm.get("soa_s")
        return cls(
            SpellerLayout.of(paradigm),
            float(soa) if soa is not None else None,
            float(paradigm.get("trial_pause_s") or 0.0),
        )

    def seconds(self, repetitions: float) -> float | None:
        if self.soa_s is None:
            return None
        return seconds_per_selection(self.layout, repetitions, self.soa_s, self.trial_pause_s)


@dataclass
class _Group:
    session_id: str
    service: str
    version: int | None
    rule: str
    timing: Timing
    repetitions: list[int] = field(default_factory=list)
    decided: list[datetime] = field(default_factory=list)
    outcomes: list[bool | None] = field(default_factory=list)

    def add(self, r: Mapping[str, Any]) -> None:
        self.repetitions.append(int(r["repetitions"]))
        self.decided.append(r["decided_at"])
        truth = r["targets"]
        self.outcomes.append(
            None
            if truth is None
            else is_correct(r["codes"] or [], r["symbol"], truth, r["true_symbol"])
        )


def _metrics(
    rule: str,
    n_symbols: int,
    outcomes: Sequence[bool | None],
    mean_repetitions: float,
    seconds: float | None,
    timing: Literal["paradigm", "measured", "mixed"] | None,
) -> dict[str, Any]:
    known = [o for o in outcomes if o is not None]
    accuracy = sum(known) / len(known) if known else None
    bits = wolpaw_bits(n_symbols, accuracy) if accuracy is not None else None
    per_min = (
        itr_bits_per_min(n_symbols, accuracy, seconds)
        if accuracy is not None and seconds is not None and seconds > 0
        else None
    )
    return {
        "rule": rule,
        "n_symbols": n_symbols,
        "chance": 1.0 / n_symbols,
        "decisions": len(outcomes),
        "with_truth": len(known),
        "correct": sum(known),
        "accuracy": accuracy,
        "mean_repetitions": mean_repetitions,
        "seconds_per_selection": seconds,
        "timing": timing,
        "bits_per_selection": bits,
        "bits_per_min": per_min,
    }


def _row(g: _Group, want: str, labels: Mapping[int, str]) -> BciSessionRule:
    mean_reps = sum(g.repetitions) / len(g.repetitions)
    paradigm = g.timing.seconds(mean_reps)
    n = len(g.decided)
    measured = (max(g.decided) - min(g.decided)).total_seconds() / (n - 1) if n > 1 else None
    source: Literal["paradigm", "measured"] | None
    if want == "paradigm" or (want == "auto" and paradigm is not None):
        seconds, source = paradigm, "paradigm"
    else:
        seconds, source = measured, "measured"
    if seconds is None:
        source = None
    return BciSessionRule(
        **_metrics(g.rule, g.timing.layout.n_symbols, g.outcomes, mean_reps, seconds, source),
        session_id=g.session_id,
        service=g.service,
        model_version_id=g.version,
        model_version=labels.get(g.version) if g.version is not None else None,
        seconds_paradigm=paradigm,
        seconds_measured=measured,
        first_decided_at=min(g.decided),
        last_decided_at=max(g.decided),
    )


def _overall(rows: Sequence[BciSessionRule], groups: Sequence[_Group]) -> list[BciRuleOverall]:
    """Pooled per rule and n_symbols: accuracy over every decision with truth, seconds per
    selection weighted by decisions, and Wolpaw on the pooled accuracy."""
    pooled: dict[tuple[str, int], list[tuple[BciSessionRule, _Group]]] = defaultdict(list)
    for row, g in zip(rows, groups, strict=True):
        pooled[(row.rule, row.n_symbols)].append((row, g))
    out = []
    for (rule, n_symbols), members in sorted(pooled.items()):
        outcomes = [o for _, g in members for o in g.outcomes]
        reps = [r for _, g in members for r in g.repetitions]
        timed = [row for row, _ in members if row.seconds_per_selection is not None]
        seconds = None
        if len(timed) == len(members):  # a row without a time leaves the pool untimed
            weighted = sum((r.seconds_per_selection or 0.0) * r.decisions for r in timed)
            seconds = weighted / sum(r.decisions for r in timed)
        sources = {row.timing for row, _ in members}
        timing: Literal["paradigm", "measured", "mixed"] | None = (
            None if seconds is None else (sources.pop() if len(sources) == 1 else "mixed")
        )
        versions = {row.model_version_id for row, _ in members}
        out.append(
            BciRuleOverall(
                **_metrics(rule, n_symbols, outcomes, sum(reps) / len(reps), seconds, timing),
                sessions=len({row.session_id for row, _ in members}),
                model_version_ids=sorted(v for v in versions if v is not None),
            )
        )
    return out


@router.get("/bci", response_model=BciOut)
async def bci(
    pool: Pool,
    service: ServiceFilter = None,
    session_id: SessionFilter = None,
    timing: TimingQuery = "auto",
    limit: Annotated[int, Query(ge=1, le=1000, description="Newest sessions with decisions")] = 50,
) -> BciOut:
    """Decision accuracy, chance and Wolpaw ITR per session, model version and stopping rule."""
    params = {"service": service, "session": session_id, "limit": limit}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_DECISIONS, params)
        found = await cur.fetchall()
        if session_id is not None and not found:
            await cur.execute(_KNOWN, [session_id, session_id])
            if not (await cur.fetchone() or {}).get("known"):
                raise NotFound(
                    f"no session {session_id!r}: GET /sessions?service=... lists them",
                    field="session_id",
                )
        versions = {decided_by(r["model_version_ids"]) for r in found} - {None}
        await cur.execute(_LABELS, [sorted(v for v in versions if v is not None)])
        labels = {int(r["id"]): str(r["label"]) for r in await cur.fetchall()}
    notes: list[str] = []
    if session_id is not None and not found:
        notes.append(f"session {session_id!r} has no decisions: not a speller session, or none yet")
    groups: dict[tuple[str, int | None, str], _Group] = {}
    timings: dict[str, Timing | str] = {}  # per session: its timing, or why it has none
    for r in found:
        sid = r["session_id"]
        if sid not in timings:
            try:
                timings[sid] = Timing.of(r["paradigm"] or {})
            except (NeurostreamError, AttributeError, TypeError, ValueError) as e:
                timings[sid] = str(e)
        session_timing = timings[sid]
        if isinstance(session_timing, str):
            continue
        version = decided_by(r["model_version_ids"])
        key = (sid, version, r["rule"])
        if key not in groups:
            groups[key] = _Group(sid, r["service"], version, r["rule"], session_timing)
        groups[key].add(r)
    notes += [
        f"session {sid!r} left out: {why}" for sid, why in timings.items() if isinstance(why, str)
    ]
    ordered = list(groups.values())
    rows = [_row(g, timing, labels) for g in ordered]
    return BciOut(
        service=service,
        session_id=session_id,
        timing=timing,
        rows=rows,
        overall=_overall(rows, ordered),
        notes=notes,
    )
