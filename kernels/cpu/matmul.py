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

A Linear layer's primitives live here too: ``addmm`` and ``addmm_relu`` (the bias, and ReLU, applied
inside each block), and ``linear_backward``, whose two products run at once, each whole on its own
thread, rather than one after the other split by rows (see its docstring).
"""
from __future__ import annotations

import threading

import numpy as np
from numba import get_num_threads

from minitrans.threads import blas_is_single_threaded, worker_pool

from .linear_act import add_bias_inplace, bias_relu_inplace, relu_backward_column_sums
from .reduce import column_sums_on_this_thread, sum as column_sums

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


def addmm_relu(bias, a, b):
    """``max(a @ b + bias, 0)`` (``bias`` (n,) or None): a Linear layer followed by ReLU, as
    ``y = a @ b`` and then ``y += bias; np.maximum(y, 0, out=y)`` in one pass
    (``linear_act.bias_relu_inplace``) inside each thread's block of rows, while they are in cache
    (the same values, bit for bit, as the three steps one after the other)."""
    return _product(a, b, bias, relu=True)


def linear_backward(g, x, w, needs=(True, True, True), relu_out=None):
    """The gradients of ``y = x @ w.T + b`` for 2-D ``g`` (m, n), ``x`` (m, k), ``w`` (n, k):
    ``(g @ w, g.T @ x, g.sum(axis=0))``, None for each one whose ``needs`` entry is false. With
    ``relu_out`` (``y`` of ``y = max(x @ w.T + b, 0)``), those of ``gp = where(relu_out > 0, g, 0)``,
    the ReLU's gradient, which one pass makes together with its column sums (``linear_act.py``).

    With two products to compute and at least two threads, each runs whole, as one single-threaded
    BLAS call on a thread of its own (a worker computes ``g.T @ x`` while the calling thread computes
    ``g @ w`` and then the column sums): the two have the same FLOP count, and a whole product runs
    at a higher rate than the halves that splitting each by rows gives, with one hand-over instead of
    two. Every result is the one the single-threaded path gives, bit for bit, whatever the timing
    (a product no worker has started by then is computed by the calling thread). Otherwise each
    product is ``matmul`` (split by rows where that pays)."""
    needs_x, needs_w, needs_b = needs
    gb = None
    if relu_out is not None:
        g, gb = relu_backward_column_sums(relu_out, g, needs_b)
        needs_b = False
    gw_job = None
    if needs_x and needs_w and get_num_threads() > 1 and not _on_a_worker() and g.ndim == x.ndim == w.ndim == 2 \
            and 2 * g.size * x.shape[1] >= MIN_FLOPS and g.dtype == x.dtype == w.dtype and g.dtype.kind == "f" \
            and blas_is_single_threaded():
        gw_job = worker_pool(1).submit(np.matmul, g.T, x)
    if gw_job is None:      # the column sums first, while g (just written by the op before) is in cache
        gb = column_sums(g, axis=0) if needs_b else gb
        gx = _product(g, w, None) if needs_x else None
        return gx, _product(g.T, x, None) if needs_w else None, gb
    gx = np.matmul(g, w)
    gb = column_sums_on_this_thread(g) if needs_b else gb
    gw = np.matmul(g.T, x) if gw_job.cancel() else gw_job.result()   # not started: computed here
    return gx, gw, gb


def _finish(y, bias, relu=False):
    if relu:
        return bias_relu_inplace(y, bias)
    return y if bias is None else add_bias_inplace(y, bias)


def _on_a_worker() -> bool:
    return threading.current_thread().name.startswith("minitrans-")


def _product(a, b, bias, relu=False):
    nt = get_num_threads()
    if nt == 1 or _on_a_worker():
        return _finish(np.matmul(a, b), bias, relu)
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]:
        m, k = a.shape
        n = b.shape[1]
        split = m
    elif a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1]:
        split, m, k = a.shape
        n = b.shape[2]
        m *= split
    else:                   # everything else (and every bad shape) as NumPy does it
        return _finish(np.matmul(a, b), bias, relu)
    if 2 * m * n * k < MIN_FLOPS or split < 2 or a.dtype != b.dtype or a.dtype.kind != "f" \
            or not blas_is_single_threaded() or ((bias is not None or relu) and a.ndim != 2):
        return _finish(np.matmul(a, b), bias, relu)
    out = np.empty(a.shape[:-1] + (b.shape[-1],), a.dtype)
    blocks = _blocks(split, min(nt, split))
    if a.ndim == 2:
        def run(r0, r1):
            _finish(np.matmul(a[r0:r1], b, out=out[r0:r1]), bias, relu)
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
