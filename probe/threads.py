"""The one helper that limits threads: torch's intra-op threads and, optionally, every BLAS/LAPACK library loaded.

Three callers, each for its own reason:

- training (:mod:`probe.run.loop`) sets torch's threads for a run: the count is part of a run's reproducibility
  (matmul reductions are split by thread), so a run sets it and a library call leaves it as it found it;
- an analysis (:mod:`probe.analysis.jobs`) runs its jobs single-threaded on several threads, so that every value
  is computed with the same settings whichever thread computes it;
- the eigensolvers of the spectral and sharing measures run LAPACK on one thread: OpenBLAS's threads spin, and when
  the cores are shared they collapse (measured on a busy 2-core machine: eigh of a 75 x 75 matrix 0.24 s with two
  threads, 0.001 s with one). The setting is scoped to the call and restored after it.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext


@contextmanager
def limit_threads(n: int | None, blas: bool = True):
    """torch's intra-op threads (MKL's LAPACK included) set to ``n`` inside the block and, with ``blas``, every BLAS
    library loaded limited to ``n`` (through threadpoolctl, a dependency of scikit-learn, when it is installed);
    both restored after it. No-op when ``n`` is None."""
    if n is None:
        yield
        return
    import torch  # lazy: `import probe` and `probe --help` do not load torch

    limit = nullcontext()
    if blas:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # threadpoolctl comes with scikit-learn; without it torch's threads only
            pass
        else:
            limit = threadpool_limits(limits=n, user_api="blas")
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        with limit:
            yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)
