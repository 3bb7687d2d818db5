"""Fit the field's standard P300 pipeline on your own recordings, ready to push.

XDAWN covariances + tangent space + logistic regression (pyRiemann; MOABB's strongest P300
baseline) fitted on the epochs a live neurostream session would publish: the same causal
1-30 Hz stream filter, the same epoch window, cut from the recording's own markers. The
script writes what ``neurostream models push`` takes::

    python examples/fit_xdawn_tangent_space.py run1.csv run2.csv run3.csv \\
        --events target=2,nontarget=1 --out model/
    neurostream models push model/model.skops --name p300-xdawn --family sklearn-pipeline \\
        --pipeline raw@1 --signature model/signature.json --assign p300

It is a plain user script: nothing here is needed to serve the model, and any other
scikit-learn-compatible pipeline saved with skops goes the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import skops.io as sio
from pyriemann.estimation import XdawnCovariances
from pyriemann.tangentspace import TangentSpace
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline

from neurostream.labelling import EventMapping
from neurostream.models.signature import Signature
from neurostream.recordings import read_recording
from producer.offline import LabelledEpochs, epochs_from_recording


def pipeline() -> Pipeline:
    """MOABB's P300 pipeline: 2 XDAWN filters per class, Ledoit-Wolf covariances."""
    return make_pipeline(
        XdawnCovariances(nfilter=2, estimator="lwf", xdawn_estimator="scm"),
        TangentSpace(metric="riemann"),
        LogisticRegression(max_iter=1000),
    )


def epochs(files: list[Path], events: str) -> list[LabelledEpochs]:
    """Each run's epochs as the producer cuts them (its default filter and window)."""
    mapping = EventMapping.parse(events)
    return [epochs_from_recording(read_recording(f), mapping=mapping) for f in files]


def signature(run: LabelledEpochs) -> dict[str, object]:
    """The input the model was fitted on: what the worker checks every window against."""
    geo = run.geometry
    assert geo is not None
    return Signature(
        fs=run.fs,
        n_channels=run.x.shape[1],
        n_samples=run.x.shape[2],
        channels=run.channels,
        tmin=geo.tmin,
        tmax=geo.tmax,
        baseline=geo.baseline,
        filtered=geo.filtered,
    ).to_spec()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, help="recordings to fit on (one run each)")
    ap.add_argument("--events", default="target=2,nontarget=1", help="marker codes to classes")
    ap.add_argument("--out", type=Path, default=Path("model"), help="folder to write into")
    args = ap.parse_args()

    runs = epochs(args.files, args.events)
    x = np.concatenate([r.x for r in runs]).astype(np.float64)
    y = np.concatenate([r.y for r in runs])
    groups = np.concatenate([np.full(len(r.y), i) for i, r in enumerate(runs)])
    if len(runs) > 1:  # leave-one-run-out, as the field reports it
        aucs = []
        for held in range(len(runs)):
            fit = pipeline().fit(x[groups != held], y[groups != held])
            proba = fit.predict_proba(x[groups == held])[:, list(fit.classes_).index(1)]
            aucs.append(roc_auc_score(y[groups == held], proba))
        each = ", ".join(f"{a:.3f}" for a in aucs)
        print(f"leave-one-run-out ROC-AUC {np.mean(aucs):.3f} ({each})")
    model = pipeline().fit(x, y)  # refit on every run
    args.out.mkdir(parents=True, exist_ok=True)
    sio.dump(model, args.out / "model.skops")
    (args.out / "signature.json").write_text(json.dumps(signature(runs[0]), indent=2) + "\n")
    print(f"{len(y)} epochs ({int(y.sum())} targets), {len(runs)} runs -> {args.out}/model.skops")


if __name__ == "__main__":
    main()
