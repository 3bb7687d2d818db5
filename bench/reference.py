"""Reference benchmark: the project's pipelines against the field's standard practice on
real recordings, on one chronological split per folder.

Each folder of ``../shared/data/eeg-notebooks`` trains on all runs but the last two and
tests on the last two. The reference set is computed offline the way eeg-notebooks' and
MOABB's pipelines do it: each whole run band-passed 1–30 Hz (zero-phase IIR, as
eeg-notebooks' ``raw.filter(1, 30, method="iir")``), epochs −0.1…0.8 s with a −0.1…0
baseline, epochs over 100 µV peak-to-peak rejected (train and test), then Vect+LDA,
Xdawn+LDA, ERPCov+MDM and XdawnCov+TS+LR. For SSVEP: 1–4 s after onset, a filter bank
(15–25 and 25–35 Hz) into stacked covariances + tangent space + LR, log-variance + LDA,
and a training-free CCA against 20/30 Hz sine references. Beside them, ``erp@1``,
``erp@2`` (when registered) and ``bandpower@1`` go through the project's own training
(``launcher.bootstrap.train_from_recordings``) and are served on test epochs cut by the
live producer's path (``producer.offline.epochs_from_recording``) through ``ServingModel``.

Every ROC-AUC carries a paired bootstrap 95 % interval of AUC(row) − AUC(best reference),
resampling the test epochs both scored (matched by run and event onset). Run:
.venv/bin/python -m bench.reference [--bootstrap 1000] [--seed 0] [--folders visual/P300/...]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal as sps
from scipy.stats import rankdata
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from bench.common import table
from launcher.bootstrap import DEFAULT_STREAM_FILTER, train_from_recordings
from neurostream import features
from neurostream.gate import Gate
from neurostream.labelling import EventMapping
from neurostream.models.serving import ServingModel
from neurostream.models.training import TrainedModel
from neurostream.recordings import Recording, read_recording
from neurostream.streamfilter import FilterSpec
from producer.offline import LabelledEpochs, epochs_from_recording
from producer.settings import ProducerSettings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eeg-notebooks"
REJECT_UV = 100.0  # peak-to-peak, any channel
TARGET_MARGIN = 0.02  # erp@2 mean ROC-AUC >= best reference mean - this


@dataclass(frozen=True)
class Folder:
    path: str
    paradigm: str  # "p300" | "ssvep"
    events: str

    @property
    def mapping(self) -> EventMapping:
        return EventMapping.parse(self.events)


FOLDERS = {
    f.path: f
    for f in (
        Folder("visual/P300/subject2/session1", "p300", "target=2,nontarget=1"),
        Folder("auditory/P300/subject1/session1", "p300", "target=2,nontarget=1"),
        Folder("visual/SSVEP/subject1/session1", "ssvep", "30hz=1,20hz=2"),
    )
}


@dataclass(frozen=True)
class Project:
    """One of the project's own pipelines, trained by ``train_from_recordings``."""

    pipeline: str
    tmin: float
    tmax: float
    feature_params: dict[str, Any] = field(default_factory=dict)
    gate: bool = False  # train and serve behind the artifact gate (peak-to-peak, flat)
    stream_filter: str | None = None  # the producer's causal filter ("1-30@4"); None: off
    label: str = ""  # the row's name, when one pipeline appears twice

    @property
    def name(self) -> str:
        return self.label or self.pipeline


# erp@1 and bandpower@1 as shipped before the stream filter (unfiltered, no gate); erp@2
# behind the producer's default causal filter and the default gate.
P300_PROJECT = (
    Project("erp@1", -0.1, 0.7),
    Project("erp@2", -0.1, 0.8, gate=True, stream_filter=DEFAULT_STREAM_FILTER.label),
)
_SSVEP_BANDS = {"bands": {"f20": [15, 25], "f30": [25, 35]}}
SSVEP_PROJECT = (
    Project("bandpower@1", 1.0, 4.0, _SSVEP_BANDS),
    Project(
        "bandpower@1", 1.0, 4.0, _SSVEP_BANDS,
        stream_filter=DEFAULT_STREAM_FILTER.label, label="bandpower@1 behind 1-30 Hz",
    ),
)  # fmt: skip


@dataclass
class Scored:
    """A row: per-epoch scores of class 1 and predicted labels on keyed test epochs."""

    name: str
    keys: list[tuple[int, int]]  # (test run index, event onset sample)
    y: np.ndarray
    score: np.ndarray
    predicted: np.ndarray
    seconds: float
    note: str = ""
    auc: float = float("nan")
    bacc: float = float("nan")

    def __post_init__(self) -> None:
        if len(self.y):
            self.auc = float(roc_auc_score(self.y, self.score))
            self.bacc = float(balanced_accuracy_score(self.y, self.predicted))


# --- the reference practice ---------------------------------------------------------------


@dataclass
class Epochs:
    x: np.ndarray  # [n, c, s] µV
    y: np.ndarray  # class ids of the mapping
    keys: list[tuple[int, int]]
    rejected: int
    edge: int  # events too close to a run's start or end


def _bandpass(data: np.ndarray, fs: float, lo: float, hi: float) -> np.ndarray:
    """Zero-phase 4th-order Butterworth over a whole run (MNE's ``method='iir'`` default)."""
    sos = sps.butter(4, [lo, hi], btype="bandpass", fs=fs, output="sos")
    return np.asarray(sps.sosfiltfilt(sos, data, axis=-1))


def cut(
    recs: Sequence[Recording],
    mapping: EventMapping,
    prepare: Callable[[Recording], np.ndarray],
    tmin: float,
    tmax: float,
    baseline: bool,
    reject_uv: float | None,
) -> Epochs:
    """Epochs ``[onset + tmin, onset + tmax]`` (inclusive, as ``mne.Epochs``) of every
    mapped event, from each run prepared as a whole; then baseline and rejection."""
    xs, ys, keys, edge = [], [], [], 0
    for r, rec in enumerate(recs):
        sig = prepare(rec)
        a, b = round(tmin * rec.fs), round(tmax * rec.fs) + 1
        for onset, code in np.asarray(rec.events, np.int64).reshape(-1, 2):
            k = mapping.class_of(int(code))
            if k is None:
                continue
            if onset + a < 0 or onset + b > sig.shape[1]:
                edge += 1
                continue
            xs.append(sig[:, onset + a : onset + b])
            ys.append(k)
            keys.append((r, int(onset)))
    x = np.stack(xs)
    if baseline:
        n0 = -round(tmin * recs[0].fs)
        x = x - x[:, :, : n0 + 1].mean(axis=-1, keepdims=True)
    keep = np.ones(len(x), bool)
    if reject_uv is not None:
        keep = np.ptp(x, axis=-1).max(axis=-1) <= reject_uv
    return Epochs(
        x[keep], np.asarray(ys)[keep], [k for k, ok in zip(keys, keep, strict=True) if ok],
        int((~keep).sum()), edge,
    )  # fmt: skip


class CCA:
    """Training-free SSVEP detection: canonical correlation of an epoch with sine/cosine
    references at each class's frequency; the score is the difference of the two."""

    def __init__(self, freqs: Sequence[float] = (30.0, 20.0), fs: float = 256.0) -> None:
        self.freqs = freqs
        self.fs = fs

    def fit(self, X: np.ndarray, y: np.ndarray) -> CCA:
        self.classes_ = np.unique(y)
        return self

    def _rho(self, X: np.ndarray) -> np.ndarray:
        t = np.arange(X.shape[-1]) / self.fs
        out = np.zeros((len(X), len(self.freqs)))
        for j, f in enumerate(self.freqs):
            ref = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
            qy = np.linalg.qr(ref - ref.mean(0))[0]
            for i, x in enumerate(X):
                qx = np.linalg.qr((x - x.mean(-1, keepdims=True)).T)[0]
                out[i, j] = np.linalg.svd(qx.T @ qy, compute_uv=False)[0]
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        rho = self._rho(X)
        e = np.exp(10 * (rho - rho.max(axis=1, keepdims=True)))
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_[np.argmax(self._rho(X), axis=1)])


def reference_models(paradigm: str, fs: float) -> dict[str, Any]:
    from mne.decoding import Vectorizer
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances, ERPCovariances, XdawnCovariances
    from pyriemann.spatialfilters import Xdawn
    from pyriemann.tangentspace import TangentSpace
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis as LDA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FunctionTransformer, make_pipeline

    def lda() -> LDA:
        return LDA(shrinkage="auto", solver="lsqr")

    def lr() -> LogisticRegression:
        return LogisticRegression(max_iter=1000)

    if paradigm == "p300":
        return {
            "Vect+LDA": make_pipeline(Vectorizer(), lda()),
            "Xdawn+LDA": make_pipeline(Xdawn(nfilter=2), Vectorizer(), lda()),
            "ERPCov+MDM": make_pipeline(ERPCovariances(estimator="lwf"), MDM()),
            "XdawnCov+TS+LR": make_pipeline(
                XdawnCovariances(nfilter=2, estimator="lwf"), TangentSpace(), lr()
            ),
        }
    log_var = FunctionTransformer(lambda x: np.log(np.var(x, axis=-1)))
    return {  # inputs: the two filter-bank bands stacked on the channel axis
        "FB-Cov+TS+LR": make_pipeline(Covariances(estimator="lwf"), TangentSpace(), lr()),
        "FB-logvar+LDA": make_pipeline(log_var, lda()),
        "CCA 20/30 Hz": CCA((30.0, 20.0), fs),
    }


def run_references(
    folder: Folder, train: list[Recording], test: list[Recording]
) -> tuple[list[Scored], dict[str, Any]]:
    mapping, fs = folder.mapping, train[0].fs
    if folder.paradigm == "p300":

        def prepare(rec: Recording) -> np.ndarray:
            return _bandpass(rec.data, rec.fs, 1.0, 30.0)

        geometry: tuple[float, float, bool] = (-0.1, 0.8, True)
    else:

        def prepare(rec: Recording) -> np.ndarray:
            bands = [_bandpass(rec.data, rec.fs, lo, hi) for lo, hi in ((15, 25), (25, 35))]
            return np.concatenate(bands)

        geometry = (1.0, 4.0, False)
    tr = cut(train, mapping, prepare, *geometry, REJECT_UV)
    te = cut(test, mapping, prepare, *geometry, REJECT_UV)
    rows = []
    for name, model in reference_models(folder.paradigm, fs).items():
        t = time.perf_counter()
        model.fit(tr.x, tr.y)
        if name.startswith("CCA"):  # the two bands summed: 15–35 Hz, both fundamentals
            n_ch = len(train[0].channels)
            proba = model.predict_proba(te.x[:, :n_ch] + te.x[:, n_ch:])
        else:
            proba = model.predict_proba(te.x)
        rows.append(
            Scored(
                name, te.keys, te.y, proba[:, 1], np.argmax(proba, axis=1),
                time.perf_counter() - t,
            )
        )  # fmt: skip
    info = {
        "train": f"{len(tr.y)} kept, {tr.rejected} rejected",
        "test": f"{len(te.y)} kept, {te.rejected} rejected",
        "classes_test": np.bincount(te.y, minlength=len(mapping.classes)).tolist(),
    }
    return rows, info


# --- the project's own pipelines -----------------------------------------------------------


def _onsets(epochs: LabelledEpochs, rec: Recording, mapping: EventMapping) -> list[int]:
    """Each producer epoch's event onset (sample index in ``rec``).

    Window times are ``anchor + i / fs`` with an anchor of the replay's wall clock, so the
    epochs' offsets from the first are exact sample counts; the one shift that lays them
    all on the recording's own mapped events (with their codes) places them."""
    if not len(epochs.y):
        return []
    ev = np.asarray(rec.events, np.int64).reshape(-1, 2)
    mapped = {int(s): int(c) for s, c in ev if mapping.class_of(int(c)) is not None}
    rel = np.rint((epochs.t0 - epochs.t0[0]) * rec.fs).astype(np.int64)
    for onset0 in sorted(mapped):
        if epochs.codes[0] != mapped[onset0]:
            continue
        cand = rel + onset0
        if all(mapped.get(int(o)) == int(c) for o, c in zip(cand, epochs.codes, strict=True)):
            return [int(o) for o in cand]
    raise RuntimeError(f"{rec.path.name}: producer epochs do not match the recording's events")


def producer_settings(trained: TrainedModel) -> ProducerSettings:
    """The producer settings of a live session that serves ``trained``: the stream filter
    its epochs were cut behind (its signature's geometry; none recorded: unfiltered)."""
    geometry = trained.signature.geometry
    label = geometry.filtered if geometry is not None else None
    spec = FilterSpec.parse(label) if label else None
    return ProducerSettings(
        paradigm="none",
        filter_l_freq=spec.l_freq if spec else None,
        filter_h_freq=spec.h_freq if spec else None,
        filter_order=spec.order if spec else 4,
    )


def run_project(
    folder: Folder, proj: Project, train_files: list[Path], test: list[Recording]
) -> Scored | str:
    """Train through ``train_from_recordings``, serve the test runs' producer epochs through
    ``ServingModel``: the version's gate (when it records one) leaves epochs out as a worker
    would, and they are counted in the note."""
    if proj.pipeline not in features.available_pipelines():
        return "not available"
    t = time.perf_counter()
    try:
        validated = train_from_recordings(
            "sklearn-lda", train_files, folder.events, tmin=proj.tmin, tmax=proj.tmax,
            pipeline=proj.pipeline, feature_params=proj.feature_params or None,
            gate=Gate(peak_to_peak_uv=REJECT_UV) if proj.gate else None,
            stream_filter=FilterSpec.parse(proj.stream_filter) if proj.stream_filter else None,
        )  # fmt: skip
    except Exception as exc:  # a pipeline under construction: report it, run the rest
        return f"failed: {type(exc).__name__}: {exc}"
    trained = validated.trained
    model = ServingModel.from_row(trained.to_row(model_name=f"bench-{proj.pipeline}"))
    settings = producer_settings(trained)
    keys: list[tuple[int, int]] = []
    ys, scores, predicted = [], [], []
    gated = 0
    for r, rec in enumerate(test):
        ep = epochs_from_recording(rec, settings, validated.mapping, tmin=proj.tmin, tmax=proj.tmax)
        onsets = np.asarray(_onsets(ep, rec, folder.mapping), np.int64)
        x, y = ep.x, ep.y
        verdict = model.check_gate(x, ep.fs, channels=ep.channels)
        if verdict is not None:
            clean = ~verdict.rejected
            gated += int((~clean).sum())
            x, y, onsets = x[clean], y[clean], onsets[clean]
        if not len(y):
            continue
        reason = model.check_geometry(ep.geometry)
        if reason:
            raise RuntimeError(reason)
        pred = model.predict(x, ep.fs, channels=ep.channels, geometry=ep.geometry)
        keys += [(r, int(o)) for o in onsets]
        ys.append(y)
        scores.append(pred.proba[:, 1])
        predicted.append(np.searchsorted(np.asarray(model.classes), pred.predicted))
    n_train = sum(len(run.kept.y) for run in validated.runs)
    n_out = sum(len(run.epochs.y) - len(run.kept.y) for run in validated.runs)
    cv = trained.metrics.get("roc_auc")
    geometry = trained.signature.geometry
    note = f"stream {geometry.filtered if geometry and geometry.filtered else 'unfiltered'}, "
    note += f"{proj.tmin:g}..{proj.tmax:g} s; train {n_train} epochs"
    if proj.gate:
        note += f" ({n_out} gated; test {gated} gated)"
    if cv is not None:
        note += f", LORO-CV AUC {cv:.3f}"
    return Scored(
        proj.name, keys, np.concatenate(ys), np.concatenate(scores),
        np.concatenate(predicted), time.perf_counter() - t, note,
    )  # fmt: skip


# --- paired bootstrap ----------------------------------------------------------------------


def _auc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of ``s`` [B, n] against the matching row of ``y`` (Mann–Whitney)."""
    ranks = rankdata(s, axis=1)
    pos = y == 1
    n1 = pos.sum(axis=1)
    n0 = y.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(((ranks * pos).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0))


def paired_ci(row: Scored, best: Scored, n_boot: int, seed: int) -> tuple[float, float, int]:
    """95 % interval of AUC(row) − AUC(best) over bootstrap resamples of the common epochs."""
    index = {k: i for i, k in enumerate(best.keys)}
    common = [(i, index[k]) for i, k in enumerate(row.keys) if k in index]
    a = np.array([i for i, _ in common])
    b = np.array([j for _, j in common])
    y = row.y[a]
    if not np.array_equal(y, best.y[b]):
        raise RuntimeError(f"{row.name}: labels differ from the reference's on common epochs")
    idx = np.random.default_rng(seed).integers(0, len(a), (n_boot, len(a)))
    diff = _auc_rows(y[idx], row.score[a][idx]) - _auc_rows(y[idx], best.score[b][idx])
    lo, hi = np.nanpercentile(diff, [2.5, 97.5])
    return float(lo), float(hi), len(a)


# --- the run -------------------------------------------------------------------------------


def bench_folder(folder: Folder, n_boot: int, seed: int) -> tuple[Scored, dict[str, Scored | str]]:
    files = sorted((DATA / folder.path).glob("*.csv"))
    train_files, test_files = files[:-2], files[-2:]
    train = [read_recording(f) for f in train_files]
    test = [read_recording(f) for f in test_files]
    refs, info = run_references(folder, train, test)
    best = max(refs, key=lambda r: r.auc)
    projects = P300_PROJECT if folder.paradigm == "p300" else SSVEP_PROJECT
    own = {p.name: run_project(folder, p, train_files, test) for p in projects}
    rows = []
    for r in [*refs, *own.values()]:
        if isinstance(r, str):
            continue
        lo, hi, n = paired_ci(r, best, n_boot, seed)
        ci = "(best)" if r is best else f"{r.auc - best.auc:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        kind = "reference" if r in refs else "project"
        rows.append(
            [r.name, kind, len(r.y), n, f"{r.auc:.3f}", ci, f"{r.bacc:.3f}",
             f"{r.seconds:.1f}", r.note]
        )  # fmt: skip
    missing = [k for k, v in own.items() if isinstance(v, str)]
    rows += [[k, "project", "-", "-", "-", "", "", "", own[k]] for k in missing]
    table(
        f"{folder.path}: train {', '.join(f.stem[5:] for f in train_files)} -> test "
        f"{', '.join(f.stem[5:] for f in test_files)}; reference epochs: train {info['train']}, "
        f"test {info['test']} (> {REJECT_UV:g} µV p-p), test classes "
        f"{dict(zip(folder.mapping.classes, info['classes_test'], strict=True))}",
        ["pipeline", "kind", "n test", "paired", "ROC-AUC",
         "Δ vs best ref [95% CI]", "bal. acc", "s", "note"],
        rows,
    )  # fmt: skip
    return best, own


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=list(FOLDERS))
    ap.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    t0 = time.perf_counter()
    results = {p: bench_folder(FOLDERS[p], args.bootstrap, args.seed) for p in args.folders}
    p300 = [results[p] for p in args.folders if FOLDERS[p].paradigm == "p300"]
    if p300:
        summary(p300)
    print(f"\nwhole run: {time.perf_counter() - t0:.1f} s ({args.bootstrap} bootstrap resamples)")


def summary(p300: list[tuple[Scored, dict[str, Scored | str]]]) -> None:
    """Mean ROC-AUC over the P300 folders: the project's pipelines against the best reference."""
    best_mean = float(np.mean([best.auc for best, _ in p300]))
    floor = best_mean - TARGET_MARGIN
    per_best = " / ".join(f"{best.name} {best.auc:.3f}" for best, _ in p300)
    rows = [["best reference (per folder)", f"{best_mean:.3f}", per_best, ""]]
    for name in ("erp@1", "erp@2"):
        got = [own.get(name) for _, own in p300]
        scored = [g for g in got if isinstance(g, Scored)]
        target = name == "erp@2"
        if len(scored) < len(got):
            why = "not available" if "not available" in got else "failed (see its folder)"
            rows.append([name, why, "", f"≥ {floor:.3f}: not measured" if target else ""])
            continue
        mean = float(np.mean([g.auc for g in scored]))
        verdict = f"≥ {floor:.3f}: {'met' if mean >= floor else 'NOT met'}" if target else ""
        rows.append([name, f"{mean:.3f}", " / ".join(f"{g.auc:.3f}" for g in scored), verdict])
    table(
        f"summary: mean ROC-AUC over the {len(p300)} P300 folder(s); target: erp@2 ≥ best "
        f"reference − {TARGET_MARGIN:g}",
        ["pipeline", "mean ROC-AUC", "per folder", "target"],
        rows,
    )


if __name__ == "__main__":
    main()
