"""One worker, one core: cap the native thread pools (BLAS, OpenMP, torch) of a worker.

Workers scale out as replicas, one per core, so intra-op threads inside a replica only
compete with the other replicas, the broker and the database. Worse, idle OpenBLAS and
OpenMP threads spin-wait after each small matrix product: with the libraries' defaults a
single LDA worker kept a second core busy doing nothing (bench.suite on 2 cores: 2,724
windows/s, 2 replicas no faster than one; capped at one thread: 3,758 windows/s).

``threadpoolctl`` (scikit-learn's own tool) sets the BLAS pools process-wide but OpenMP's
per calling thread, and libraries loaded later (torch arrives with the first model) start
with their defaults, so the cap is applied again in every thread that predicts after each
model load.
"""

from __future__ import annotations

import sys

from threadpoolctl import threadpool_limits


def limit_threads(n: int) -> None:
    """Cap every native thread pool loaded so far to ``n`` threads (0 leaves them alone)."""
    if n <= 0:
        return
    threadpool_limits(limits=n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def native_threads() -> dict[str, int]:
    """Threads per loaded native pool (``openblas``, ``openmp``, ``torch``), as tests check."""
    from threadpoolctl import threadpool_info

    out: dict[str, int] = {}
    for info in threadpool_info():
        api = str(info["internal_api"])
        out[api] = max(out.get(api, 0), int(info["num_threads"]))
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = int(torch.get_num_threads())
    return out
