"""Decisions of a trial-based paradigm: a P300 speller's symbol from its flashes (pure).

A row/column speller (Farwell & Donchin 1988) flashes every row and every column of a
symbol grid once per repetition; the user attends one symbol, so the flashes of its row
and its column are targets. A worker scores each flash's epoch (``PredictionItem.score``,
the classifier's probability of "target"); the decider (``workers``) feeds the scores of
one trial into a ``TrialEvidence`` and asks its ``StoppingRule``s, after each complete
repetition, whether to decide.

The evidence is the Bayesian accumulation BciPy and timeflux_bci use: a flash's score
``p`` becomes a log-likelihood ratio, its posterior odds divided by its prior odds, and a
symbol's log-posterior is the sum of the ratios of its row's and its column's flashes
under a uniform symbol prior, normalised over the symbols. The posterior odds are read
through the model version's ``Calibration`` (Platt scaling of held-out scores, made at
training) when it has one, else taken as they come (``logit(p) - logit(prior)``, ``prior``
the target share it was trained on); an uncalibrated LDA is overconfident, and its
trials would stop too early. Wolpaw's information
transfer rate (Wolpaw et al. 2002) turns a decision accuracy into bits per selection and,
with the time a selection takes, bits per minute.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from neurostream.errors import ConfigError

DEFAULT_SYMBOLS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789_"
# Scores are clipped this far from 0 and 1 before the logit: one overconfident flash
# (an LDA's probability rounds to 1.0) must not outweigh every other flash of a trial.
SCORE_CLIP = 1e-4


@dataclass(frozen=True, slots=True)
class SpellerLayout:
    """A row/column speller's grid and the stimulus (marker) code of each row and column."""

    rows: int
    cols: int
    symbols: tuple[str, ...]  # row-major, rows * cols of them
    row_codes: tuple[int, ...]
    col_codes: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ConfigError(
                f"a speller grid needs at least one row and one column, not "
                f"{self.rows}x{self.cols}",
                field="speller",
            )
        if len(self.symbols) != self.rows * self.cols:
            raise ConfigError(
                f"a {self.rows}x{self.cols} speller needs {self.rows * self.cols} symbols, "
                f"got {len(self.symbols)}",
                field="speller",
            )
        if len(self.row_codes) != self.rows or len(self.col_codes) != self.cols:
            raise ConfigError(
                "a speller needs one stimulus code per row and per column", field="speller"
            )
        codes = self.row_codes + self.col_codes
        if len(set(codes)) != len(codes) or min(codes) <= 0:
            raise ConfigError(
                f"speller stimulus codes must be distinct and positive (a marker of 0 is no "
                f"marker): {list(codes)}",
                field="speller",
            )

    @classmethod
    def grid(cls, rows: int = 6, cols: int = 6, symbols: str | None = None) -> SpellerLayout:
        """A grid with rows coded 1..R and columns R+1..R+C, symbols row-major.

        ``symbols`` is one character per cell; None takes ``DEFAULT_SYMBOLS`` (A-Z, 1-9,
        ``_``: the classic 6x6), cut to the grid's size."""
        n = rows * cols
        text = symbols if symbols is not None else DEFAULT_SYMBOLS[:n]
        if len(text) != n:
            raise ConfigError(
                f"a {rows}x{cols} speller needs {n} symbols, got {len(text)}",
                field="speller",
                hint="pass one character per cell (the default alphabet holds 36)",
            )
        return cls(
            rows,
            cols,
            tuple(text),
            tuple(range(1, rows + 1)),
            tuple(range(rows + 1, rows + cols + 1)),
        )

    @classmethod
    def of(cls, paradigm: Mapping[str, Any]) -> SpellerLayout:
        """The layout a session recorded: ``sessions.paradigm`` or its ``"speller"`` entry."""
        spec = paradigm.get("speller", paradigm)
        try:
            return cls(
                int(spec["rows"]),
                int(spec["cols"]),
                tuple(str(s) for s in spec["symbols"]),
                tuple(int(c) for c in spec["row_codes"]),
                tuple(int(c) for c in spec["col_codes"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"the session's paradigm holds no speller layout ({exc!r})", field="paradigm"
            ) from None

    def describe(self) -> dict[str, Any]:
        """The JSON stored in ``sessions.paradigm["speller"]`` (``of`` reads it back)."""
        return {
            "rows": self.rows,
            "cols": self.cols,
            "symbols": list(self.symbols),
            "row_codes": list(self.row_codes),
            "col_codes": list(self.col_codes),
        }

    @property
    def codes(self) -> tuple[int, ...]:
        """Every stimulus code: the rows', then the columns'."""
        return self.row_codes + self.col_codes

    @property
    def n_symbols(self) -> int:
        return self.rows * self.cols

    def targets(self, symbol_index: int) -> tuple[int, int]:
        """The (row code, column code) whose flashes hold ``symbol_index``."""
        if not 0 <= symbol_index < self.n_symbols:
            raise IndexError(f"symbol {symbol_index} is not on a {self.rows}x{self.cols} grid")
        return self.row_codes[symbol_index // self.cols], self.col_codes[symbol_index % self.cols]

    def symbol_of(self, codes: Collection[int]) -> int | None:
        """The symbol at the crossing of these row and column codes; None if they cross none."""
        wanted = {int(c) for c in codes}
        rows = [i for i, c in enumerate(self.row_codes) if c in wanted]
        cols = [j for j, c in enumerate(self.col_codes) if c in wanted]
        if len(rows) != 1 or len(cols) != 1 or len(wanted) != 2:
            return None
        return rows[0] * self.cols + cols[0]

    @property
    def target_prior(self) -> float:
        """The share of flashes that are targets: a row and a column of R + C codes."""
        return 2 / (self.rows + self.cols)


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def score_logit(score: float | np.ndarray) -> np.ndarray:
    """The log-odds of classifier scores clipped to ``[SCORE_CLIP, 1 - SCORE_CLIP]``: what
    every likelihood ratio here starts from (one scalar, or held-out scores to calibrate)."""
    p = np.clip(np.asarray(score, dtype=np.float64), SCORE_CLIP, 1 - SCORE_CLIP)
    logit: np.ndarray = np.log(p) - np.log1p(-p)
    return logit


def log_likelihood_ratio(score: float, prior: float) -> float:
    """``logit(score) - logit(prior)``: the evidence of one flash for "target" over "not".

    A calibrated classifier's posterior odds are its likelihood ratio times its prior odds,
    so dividing the prior odds out (``prior``: the target share it was trained on) leaves
    the ratio, which adds up over independent flashes. ``score`` is clipped to
    ``[SCORE_CLIP, 1 - SCORE_CLIP]``."""
    if not 0 < prior < 1:
        raise ValueError(f"the prior must lie in (0, 1), not {prior}")
    return float(score_logit(score)) - _logit(prior)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Platt scaling of a classifier's target probability, fitted on scores it did not train on.

    The posterior rule reads a flash's probability as calibrated: ``P(target | epoch)``.
    An LDA's probabilities are not (they crowd towards 0 and 1), so a trial's posterior
    passes a threshold too early. Fitting ``P(target) = sigmoid(slope * logit(p) +
    intercept)`` on held-out scores (a hold-out split, or cross-validation's out-of-fold
    scores) gives calibrated odds; dividing out the odds of ``prior`` (the target share of
    those scores) leaves the flash's likelihood ratio. Stored in a model version's
    ``metrics["calibration"]``.
    """

    slope: float
    intercept: float
    prior: float  # target share of the scores it was fitted on
    n: int  # how many

    MIN_PER_CLASS = 10  # fewer held-out scores of a class: no calibration

    @classmethod
    def fit(cls, scores: np.ndarray, targets: np.ndarray) -> Calibration | None:
        """From held-out target probabilities and whether each was a target; None when a
        class has fewer than ``MIN_PER_CLASS`` of them."""
        from sklearn.linear_model import LogisticRegression

        s = np.asarray(scores, dtype=np.float64)
        t = np.asarray(targets, dtype=bool)
        keep = np.isfinite(s)
        s, t = s[keep], t[keep]
        if min(int(t.sum()), int((~t).sum())) < cls.MIN_PER_CLASS:
            return None
        fit = LogisticRegression(C=1e6).fit(score_logit(s)[:, None], t)
        return cls(float(fit.coef_[0, 0]), float(fit.intercept_[0]), float(t.mean()), int(t.size))

    @classmethod
    def of(cls, metrics: Mapping[str, Any] | None) -> Calibration | None:
        """From a model version's metrics (None: it has none)."""
        found = (metrics or {}).get("calibration")
        if not isinstance(found, Mapping):
            return None
        try:
            return cls(
                float(found["slope"]),
                float(found["intercept"]),
                float(found["prior"]),
                int(found["n"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> dict[str, Any]:
        return {
            "method": "platt",
            "slope": self.slope,
            "intercept": self.intercept,
            "prior": self.prior,
            "n": self.n,
        }

    def llr(self, score: float) -> float:
        """The flash's log-likelihood ratio: calibrated log-odds less the prior's."""
        return self.slope * float(score_logit(score)) + self.intercept - _logit(self.prior)


@dataclass
class TrialEvidence:
    """The evidence of one trial so far: summed log-likelihood ratios and flashes per code."""

    layout: SpellerLayout
    prior: float
    calibration: Calibration | None = None  # the serving version's (None: read p as is)
    _llr: dict[int, float] = field(init=False, repr=False)
    _flashes: dict[int, int] = field(init=False, repr=False)
    _seen: set[int] = field(init=False, repr=False)
    _epochs: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        if not 0 < self.prior < 1:
            raise ValueError(f"the prior must lie in (0, 1), not {self.prior}")
        self._llr = dict.fromkeys(self.layout.codes, 0.0)
        self._flashes = dict.fromkeys(self.layout.codes, 0)
        self._seen = set()

    def add(
        self,
        code: int,
        score: float | None,
        *,
        seq: int | None = None,
        calibration: Calibration | None = None,
    ) -> bool:
        """Count a flash of ``code``; ``score`` None is a gated flash (seen, no evidence).

        With ``seq`` a redelivered flash is counted once. ``calibration`` (that flash's
        model version's; default the trial's) turns the score into its likelihood ratio.
        Returns whether it counted (False for a repeat, or a code the layout lacks)."""
        if code not in self._flashes or (seq is not None and seq in self._seen):
            return False
        if seq is not None:
            self._seen.add(seq)
        self._flashes[code] += 1
        self._epochs += 1
        if score is not None:
            calibrated = calibration or self.calibration
            self._llr[code] += (
                calibrated.llr(score)
                if calibrated is not None
                else log_likelihood_ratio(score, self.prior)
            )
        return True

    @property
    def repetitions(self) -> int:
        """Complete repetitions: every code flashed at least this many times."""
        return min(self._flashes.values())

    @property
    def epochs(self) -> int:
        """Flashes counted, gated ones included."""
        return self._epochs

    def log_posterior(self) -> np.ndarray:
        """Log-posterior of each symbol (row-major): its row's plus its column's evidence,
        under a uniform symbol prior, normalised (a log-softmax)."""
        rows = np.array([self._llr[c] for c in self.layout.row_codes])
        cols = np.array([self._llr[c] for c in self.layout.col_codes])
        scores = (rows[:, None] + cols[None, :]).ravel()
        top = scores.max()
        return np.asarray(scores - (top + np.log(np.exp(scores - top).sum())), dtype=np.float64)

    def posterior(self) -> np.ndarray:
        post: np.ndarray = np.exp(self.log_posterior())
        return post

    def best(self) -> tuple[int, float]:
        """The most probable symbol and its posterior (ties: the first, row-major)."""
        post = self.posterior()
        i = int(np.argmax(post))
        return i, float(post[i])

    def evidence(self) -> dict[str, float]:
        """The summed log-likelihood ratio per stimulus code (str keys, as stored in JSON)."""
        return {str(c): v for c, v in self._llr.items()}


class StoppingRule(Protocol):
    """When a trial has enough evidence to decide; asked after each complete repetition."""

    @property
    def name(self) -> str: ...

    def should_stop(self, evidence: TrialEvidence) -> bool: ...


@dataclass(frozen=True, slots=True)
class FixedRepetitions:
    """Decide after exactly ``n`` repetitions (the classic speller)."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"a fixed rule needs at least 1 repetition, not {self.n}")

    @property
    def name(self) -> str:
        return f"fixed-{self.n}"

    def should_stop(self, evidence: TrialEvidence) -> bool:
        return evidence.repetitions >= self.n


@dataclass(frozen=True, slots=True)
class PosteriorThreshold:
    """Decide once the best symbol's posterior reaches ``threshold`` (after at least
    ``min_repetitions``), or at ``max_repetitions`` whatever it is (BciPy's dynamic stop)."""

    threshold: float
    min_repetitions: int = 1
    max_repetitions: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError(f"a posterior threshold lies in (0, 1), not {self.threshold}")
        if not 1 <= self.min_repetitions <= self.max_repetitions:
            raise ConfigError(
                f"repetitions must satisfy 1 <= min ({self.min_repetitions}) <= max "
                f"({self.max_repetitions})"
            )

    @property
    def name(self) -> str:
        return f"posterior-{self.threshold:g}-max{self.max_repetitions}"

    def should_stop(self, evidence: TrialEvidence) -> bool:
        reps = evidence.repetitions
        if reps < self.min_repetitions:
            return False
        return reps >= self.max_repetitions or evidence.best()[1] >= self.threshold


_RULES_HINT = (
    "rules are comma-separated: fixed:N (decide after N repetitions) or "
    "posterior:THRESHOLD:MAX[:MIN] (decide when the best symbol's posterior reaches "
    "THRESHOLD, at most MAX repetitions), e.g. fixed:10,posterior:0.95:10"
)


def parse_rules(text: str) -> list[StoppingRule]:
    """Rules from settings or a flag: ``"fixed:10,posterior:0.9:10"``; ConfigError if bad."""
    rules: list[StoppingRule] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, *args = (a.strip() for a in part.split(":"))
        try:
            if kind == "fixed" and len(args) == 1:
                rules.append(FixedRepetitions(int(args[0])))
            elif kind == "posterior" and len(args) in (2, 3):
                rules.append(
                    PosteriorThreshold(
                        float(args[0]),
                        min_repetitions=int(args[2]) if len(args) == 3 else 1,
                        max_repetitions=int(args[1]),
                    )
                )
            else:
                raise ValueError(part)
        except (ValueError, ConfigError) as exc:
            reason = f": {exc}" if isinstance(exc, ConfigError) else ""
            raise ConfigError(
                f"cannot read the stopping rule {part!r}{reason}",
                field="decision_rules",
                hint=_RULES_HINT,
            ) from None
    names = [r.name for r in rules]
    if not rules or len(set(names)) != len(names):
        raise ConfigError(
            f"need at least one stopping rule, each once; got {text!r}",
            field="decision_rules",
            hint=_RULES_HINT,
        )
    return rules


def wolpaw_bits(n_classes: int, accuracy: float) -> float:
    """Bits per selection (Wolpaw et al. 2002): ``log2 N + P log2 P + (1-P) log2((1-P)/(N-1))``.

    0 at or below chance (``P <= 1/N``), where the formula stops meaning information."""
    if n_classes < 2:
        raise ValueError(f"a selection needs at least 2 classes, not {n_classes}")
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy lies in [0, 1], not {accuracy}")
    n, p = n_classes, accuracy
    if p <= 1 / n:
        return 0.0
    bits = math.log2(n) + p * math.log2(p)
    if p < 1:
        bits += (1 - p) * math.log2((1 - p) / (n - 1))
    return bits


def itr_bits_per_min(n_classes: int, accuracy: float, seconds_per_selection: float) -> float:
    """Wolpaw bits per minute: bits per selection times selections per minute."""
    if not seconds_per_selection > 0:
        raise ValueError(f"a selection takes a positive time, not {seconds_per_selection}")
    return wolpaw_bits(n_classes, accuracy) * 60 / seconds_per_selection


def seconds_per_selection(
    layout: SpellerLayout, repetitions: float, soa_s: float, trial_pause_s: float
) -> float:
    """How long a speller selection takes: every code flashed per repetition, then the
    pause between trials (``repetitions`` may be a mean, under a dynamic rule)."""
    return repetitions * len(layout.codes) * soa_s + trial_pause_s
