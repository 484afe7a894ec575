"""Matrix products on minitrans's own threads, each block a single-threaded BLAS call.

``matmul(a, b)`` is ``np.matmul(a, b)``; when minitrans runs on more than one thread
(``minitrans.set_num_threads``) and the product is large enough, it is cut into one block per
thread — rows of a 2-D product, matrices of a batched 3-D one — and the blocks run at once on a
small pool of Python threads (NumPy releases the GIL inside BLAS). The caller's thread computes
the first block itself. It splits only while OpenBLAS runs on one thread
(``minitrans.threads.set_blas_num_threads(1)`` or ``limit_blas_threads(1)``, an explicit choice of
the program: the count is process-wide, so this module never changes it); while OpenBLAS has
several threads, the product is one ``np.matmul`` that OpenBLAS parallelises itself.

Why not OpenBLAS's own threads: they busy-wait for work after each call. On a machine whose
cores are shared (other processes, or Numba's pool between two products) each product then waits
for the descheduled spinners: measured on the W1 training step on 2 cores under load, OpenBLAS on
2 threads took 250–360 ms of CPU per step against 86–95 ms with one BLAS thread, and its wall
time was 2.5–4× longer. Threads that block on a future instead of spinning give the cores back.

A block that no worker has started by the time the calling thread has finished its own is taken
back (its future cancelled) and computed by the calling thread: a worker waiting for a core on a
loaded machine then costs nothing, where waiting for it made the product slower than not
splitting it (the W1 step at 2 threads on 2 cores shared with a load average of ~4.7, three
alternated pairs: 71, 74, 72 ms per step before, 64, 47, 47 ms after; its CPU time ~51 ms both).

Blocks never overlap and every output element is computed by one BLAS call over the full inner
dimension, so the result does not depend on the thread count's timing (run to run it is the same).
"""
from __future__ import annotations

import threading

import numpy as np
from numba import get_num_threads

from minitrans.threads import blas_is_single_threaded, worker_pool

MIN_FLOPS = 1 << 22        # below ~4 MFLOP a product runs whole: the hand-over (~20 µs) would not pay


def _blocks(n: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n // parts)
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def matmul(a, b):
    """``np.matmul(a, b)``, split over minitrans's threads when that pays (see the module docstring)."""
    return _product(a, b, None)


def addmm(bias, a, b):
    """``a @ b + bias`` for 2-D ``a`` (m, k), ``b`` (k, n) and ``bias`` (n,), as ``y = a @ b; y += bias``.

    The addition runs inside each thread's block of rows, right after its product, while those rows
    are still in cache: as a separate pass it ran on the calling thread alone, over the whole output
    (W1's nine Linear layers: ~0.9 ms of one core per step). Each element is computed by the same
    two operations as before, so the result is the same bit for bit."""
    return _product(a, b, bias)


def _with_bias(y, bias):
    if bias is not None:
        y += bias
    return y


def _product(a, b, bias):
    nt = get_num_threads()
    if nt == 1 or threading.current_thread().name.startswith("minitrans-"):
        return _with_bias(np.matmul(a, b), bias)
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]:
        m, k = a.shape
        n = b.shape[1]
        split = m
    elif a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1]:
        split, m, k = a.shape
        n = b.shape[2]
        m *= split
    else:                   # everything else (and every bad shape) as NumPy does it
        return _with_bias(np.matmul(a, b), bias)
    if 2 * m * n * k < MIN_FLOPS or split < 2 or a.dtype != b.dtype or a.dtype.kind != "f" \
            or not blas_is_single_threaded() or (bias is not None and a.ndim != 2):
        return _with_bias(np.matmul(a, b), bias)
    out = np.empty(a.shape[:-1] + (b.shape[-1],), a.dtype)
    blocks = _blocks(split, min(nt, split))
    if a.ndim == 2:
        def run(r0, r1):
            block = np.matmul(a[r0:r1], b, out=out[r0:r1])
            if bias is not None:
                block += bias
    else:
        run = lambda r0, r1: np.matmul(a[r0:r1], b[r0:r1], out=out[r0:r1])  # noqa: E731
    pool = worker_pool(len(blocks) - 1)
    futures = [pool.submit(run, r0, r1) for r0, r1 in blocks[1:]]
    run(*blocks[0])
    for f, block in zip(futures, blocks[1:]):
        if f.cancel():          # no worker has started it (none got a core yet): do it here
            run(*block)
        else:
            f.result()
    return out
