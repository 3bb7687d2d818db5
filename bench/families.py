"""Model families side by side: one worker's windows/s serving each, in one run.

    .venv/bin/python -m bench.families            # about 3 minutes on 2 cores

The project's shrinkage LDA (``erp@1``) and EEGNet (``erp@1``, torch), the same EEGNet
exported to ONNX and served by onnxruntime, and a user's pyRiemann pipeline (XDAWN
covariances + tangent space + logistic regression on ``raw@1`` epochs, loaded from skops),
each drained from a pre-filled queue of 16-channel x 200-sample epochs by one worker
process (one native thread), beside the bare aio-pika consume+ack ceiling measured in the
same run. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse

import uvloop

from bench.common import bench_core, table
from bench.spine import ceiling, worker_rate

FAMILIES = (
    ("shrinkage LDA (sklearn-lda, erp@1)", "sklearn-lda", 1),
    ("EEGNet (torch-eegnet, erp@1)", "torch-eegnet", 4),
    ("EEGNet as ONNX (onnx, erp@1)", "onnx", 4),
    ("XDAWN cov + TS + LR (sklearn-pipeline, raw@1)", "sklearn-pipeline", 4),
)


async def main(n: int) -> None:
    core = bench_core("ns_bench_families")
    ceil = await ceiling(core, n, 512)
    rows: list[list[object]] = [
        ["bare aio-pika consume+ack (ceiling)", f"{n:,}", f"{ceil:,.0f}", "1.00"]
    ]
    for i, (label, family, divisor) in enumerate(FAMILIES):
        count = n // divisor  # the slower families drain fewer windows in similar time
        # tag: a service and session of its own (the service name keeps 5 family letters)
        rate = (await worker_rate(core, count, 512, 256, family=family, tag=f"f{i}"))["rate"]
        rows.append([label, f"{count:,}", f"{rate:,.0f}", f"{rate / ceil:.2f}"])
    table(
        "Windows/s of one worker per model family, 16 ch x 200 samples, prefetch 512, "
        "batch_max 256",
        ["model", "windows", "windows/s", "x ceiling"],
        rows,
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000, help="windows for the LDA and ceiling runs")
    args = ap.parse_args()
    uvloop.run(main(args.n))
