"""Independent jobs of one analysis run on the machine's cores: the only scheduling in probe's measuring.

The measures are plain functions of arrays (:mod:`probe.metrics`); an analysis of a checkpoint is a list of them
that do not depend on each other (one layer's spectrum, the first layer's measures, one reference's measures). NumPy,
LAPACK and torch release the GIL in their heavy parts, so threads of one process run such jobs side by side without
copying the matrices. Every thread runs its BLAS, LAPACK and torch single-threaded while the jobs run: a 4096 x 4096
``eigvalsh`` gains little from a second thread (MKL: 3.5 s on one, 2.9 s on two) and OpenBLAS's spinning threads
collapse when more threads want the cores than there are, so two jobs on two cores beat one job on two.

The values do not depend on the scheduling: each job computes what it would compute alone, from its own seeded
generators, and :func:`run_jobs` returns them by key, in the order the jobs were given.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Hashable

import torch

from probe.threads import limit_threads

MAX_WORKERS = 4  # a checkpoint has few jobs large enough to share more cores


def default_workers() -> int:
    """Threads for :func:`run_jobs`: the cores this process may use, at most :data:`MAX_WORKERS`; 1 (the jobs in
    turn, in the calling thread) where torch sees a GPU, which decomposes faster than the CPU threads would."""
    if torch.cuda.is_available():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@contextmanager
def single_threaded(workers: int | None = None):
    """BLAS and torch single-threaded inside the block (both restored after it) where jobs run on several threads
    (``workers``, default :func:`default_workers`); else nothing changes. An analysis holds the whole checkpoint's
    work in one block, what runs between its jobs included, so that every value is computed with the same settings
    whichever thread computes it (a dot product summed on two threads rounds differently from one on one)."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1:
        yield
        return
    # threadpoolctl limits the BLAS libraries loaded when the block opens: scipy's own OpenBLAS, loaded with
    # scipy.linalg, would otherwise run its LAPACK on every core inside the block when first imported there
    import scipy.linalg  # noqa: F401

    with limit_threads(1):
        yield


def run_jobs(jobs: dict[Hashable, Callable[[], object]], workers: int | None = None) -> dict:
    """``{key: fn()}`` for every job, started in the order given (put the largest first, so that the cores end close
    together) on ``workers`` threads (default :func:`default_workers`), BLAS and torch single-threaded on each
    (:func:`single_threaded`). With one worker the jobs run in turn in the calling thread, the threads' settings
    untouched.

    Every job runs to its end; then the error of the first failed job in the order given is raised (the same error
    whatever the threads' timing)."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(jobs) < 2:
        with single_threaded(workers):
            return {key: fn() for key, fn in jobs.items()}
    with single_threaded(workers), ThreadPoolExecutor(min(workers, len(jobs)), thread_name_prefix="probe-jobs",
                                                      initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {key: pool.submit(fn) for key, fn in jobs.items()}
        for future in futures.values():  # every job ends before an error is raised
            future.exception()
    return {key: future.result() for key, future in futures.items()}


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the system (glibc's ``mallopt``:
    allocations up to 1 GiB come from the heap, whose freed top is kept, and every thread allocates from that one
    heap, since a thread's own arena maps blocks over 64 MiB afresh); True where it took effect (Linux with glibc).

    An analysis allocates and frees arrays of tens to hundreds of MB again and again (Gram matrices, the solver's
    copies, fields, cosine matrices). By default glibc maps each one afresh and unmaps it when freed, and every page of
    a fresh mapping costs a page fault on first touch: 2-3 CPU s of kernel time per analyze of a 3072-4096-4096-4096-10
    MLP (the benchmark's), against about 0.2 s once the process reuses what it freed. The price is that the process
    keeps its peak memory until it exits, so it is a setting of the process that only analyzes (`probe analyze` and
    the benchmark call this), not of the measures: a training process or a notebook keeps the default."""
    import ctypes
    import platform

    try:
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # <malloc.h>
        return all([libc.mallopt(M_MMAP_THRESHOLD, 1 << 30), libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1),
                    libc.mallopt(M_ARENA_MAX, 1)])
    except (OSError, AttributeError, ValueError):
        return False
