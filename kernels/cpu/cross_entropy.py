"""Fused cross-entropy (log-softmax + NLL + label smoothing), forward and backward.

Each kernel is compiled twice by `parallel.parallel_njit`: a serial version on the calling
thread and a threaded one (`prange` over a few runs of rows per thread), chosen per call by
`parallel.row_tasks`. A row is computed the same way in both, so results do not depend
on the thread count. The target range check happens inside the same pass: the kernels count
the targets outside [0, C) (ignored rows aside) and the wrapper raises if any.

Memory plan: forward reads the logits once (max, sum and exp-sum on the cached row) and writes
loss and lse (N floats each); the exp goes into one scratch row per run of rows. Backward reads
the logits once and writes dlogits once: exp(x - lse) is recomputed from the saved lse, straight
into dlogits.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .parallel import parallel_njit, row_tasks
from .softmax import FASTMATH, exp_into, int_scratch, row_max, row_sum, zero


@njit(inline="always", fastmath=FASTMATH)
def _forward_rows(x, target, ignore_index, ls, loss, lse, start, stop):
    """For rows [start, stop): lse[i] = logsumexp(x[i]) and the label-smoothed NLL loss[i] (0 if
    ignored, NaN if the target is out of range). Returns the number of out-of-range targets.
    Scratch: one exp row and one int row for the run."""
    c = x.shape[1]
    e = np.empty(c, x.dtype)
    ib = int_scratch(c, e)
    bad = 0
    for i in range(start, stop):
        xr = x[i]
        m = row_max(xr, c, xr[0])
        total = zero(xr)
        for j in range(c):
            total += xr[j]
        exp_into(xr, m, e, ib)
        z = m + np.log(row_sum(e, c))    # summed inline, not by exp_into: see softmax.row_sum
        lse[i] = z
        t = target[i]
        if t == ignore_index:
            loss[i] = 0.0
        elif t < 0 or t >= c:
            loss[i] = np.nan
            bad += 1
        else:
            loss[i] = (1.0 - ls) * (z - xr[t]) + ls * (z - total / c)
    return bad


@parallel_njit(cache=True, fastmath=FASTMATH)
def _ce_fwd(x, target, ignore_index, ls, loss, lse, nchunks):
    """Cross-entropy forward, `prange` over nchunks runs of rows (``_ce_fwd.serial``: on the
    calling thread); returns the number of out-of-range targets."""
    n = x.shape[0]
    bad = np.empty(nchunks, np.int64)        # per task (a scalar reduction of an inlined call trips parfors)
    for k in prange(nchunks):
        bad[k] = _forward_rows(x, target, ignore_index, ls, loss, lse, k * n // nchunks, (k + 1) * n // nchunks)
    return bad.sum()


@njit(inline="always", fastmath=FASTMATH)
def _backward_rows(x, target, lse, dloss, ignore_index, ls, dx, start, stop):
    """dx[i] = dloss[i] * (exp(x[i] - lse[i]) - ls / C - (1 - ls) * onehot(t)) for rows
    [start, stop); zero rows where ignored or out of range. Returns the number of out-of-range
    targets. Scratch: one int row for the run."""
    c = x.shape[1]
    ib = int_scratch(c, dx[0])
    bad = 0
    for i in range(start, stop):
        xr, dr = x[i], dx[i]
        t = target[i]
        if t == ignore_index or t < 0 or t >= c:
            bad += t != ignore_index
            dr[:] = 0.0
            continue
        exp_into(xr, lse[i], dr, ib)
        g = dloss[i]
        off = g * (ls / c)
        for j in range(c):
            dr[j] = dr[j] * g - off
        dr[t] -= g * (1.0 - ls)
    return bad


@parallel_njit(cache=True, fastmath=FASTMATH)
def _ce_bwd(x, target, lse, dloss, ignore_index, ls, dx, nchunks):
    """Cross-entropy backward, `prange` over nchunks runs of rows (``_ce_bwd.serial``: on the
    calling thread); returns the number of out-of-range targets."""
    n = x.shape[0]
    bad = np.empty(nchunks, np.int64)
    for k in prange(nchunks):
        bad[k] = _backward_rows(x, target, lse, dloss, ignore_index, ls, dx, k * n // nchunks,
                                (k + 1) * n // nchunks)
    return bad.sum()


def _check(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Check the shapes and dtypes; return the target as a contiguous int64 array."""
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32 or float64 logits, got {logits.dtype}")
    if logits.ndim != 2 or not logits.flags.c_contiguous:
        raise ValueError("logits must be a C-contiguous (N, C) array")
    if target.shape != (logits.shape[0],) or target.dtype.kind not in "iu":
        raise ValueError("target must be an integer array of shape (N,)")
    return np.ascontiguousarray(target, dtype=np.int64)


def _raise_bad_target(t: np.ndarray, c: int, ignore_index: int):
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    raise IndexError(f"target out of range [0, {c}) at rows {np.nonzero(bad)[0][:5]}")


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, ignore_index: int,
                          label_smoothing: float):
    t = _check(logits, target)
    n, c = logits.shape
    loss = np.empty(n, logits.dtype)
    lse = np.empty(n, logits.dtype)
    if n:
        tasks = row_tasks(n, logits.size)
        kernel = _ce_fwd.threaded if tasks else _ce_fwd.serial
        if kernel(logits, t, int(ignore_index), float(label_smoothing), loss, lse, max(tasks, 1)):
            _raise_bad_target(t, c, ignore_index)
    return loss, lse


def cross_entropy_backward(logits: np.ndarray, target: np.ndarray, lse: np.ndarray,
                           dloss: np.ndarray, ignore_index: int, label_smoothing: float):
    t = _check(logits, target)
    n, c = logits.shape
    dt = logits.dtype
    dx = np.empty_like(logits)
    if n:
        tasks = row_tasks(n, logits.size)
        kernel = _ce_bwd.threaded if tasks else _ce_bwd.serial
        if kernel(logits, t, np.ascontiguousarray(lse, dt), np.ascontiguousarray(dloss, dt),
                  int(ignore_index), float(label_smoothing), dx, max(tasks, 1)):
            _raise_bad_target(t, c, ignore_index)
    return dx
