"""Worker thread cap: every native pool (BLAS, OpenMP, torch) ends at the configured size.

Each case runs in a fresh interpreter: the cap is process-wide and would otherwise slow
the tests that train models in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_PROBE = """
import json, sys
import numpy, scipy.linalg, sklearn.discriminant_analysis, torch  # load every native pool
from workers.compute import limit_threads, native_threads
before = native_threads()
limit_threads(int(sys.argv[1]))
print(json.dumps({"before": before, "after": native_threads()}))
"""


def probe(n: int, *, env_threads: str = "2") -> dict[str, dict[str, int]]:
    env = {"OMP_NUM_THREADS": env_threads, "OPENBLAS_NUM_THREADS": env_threads}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(n)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")} | env,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("n", [1, 3])
def test_limit_threads_caps_blas_openmp_and_torch(n: int) -> None:
    got = probe(n)
    assert {"openblas", "openmp", "torch"} <= got["after"].keys()
    assert got["before"]["torch"] == 2  # the environment's default, so the cap is visible
    assert set(got["after"].values()) == {n}


def test_zero_keeps_the_library_defaults() -> None:
    got = probe(0)
    assert got["after"] == got["before"]
    assert got["after"]["torch"] == 2
