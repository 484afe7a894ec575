"""Fused cross-entropy (log-softmax + NLL + label smoothing), forward and backward.

Parallelisation: `prange` over rows (one row per task).
Memory plan: forward reads the logits once (max, exp-sum and the smoothing mean in one
cached row pass) and writes loss and lse (N floats each); the exp goes into a per-task
scratch row. Backward reads logits once and writes dlogits once: exp(x - lse) is
recomputed from the saved lse, never stored between the passes.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .softmax import FASTMATH, exp_into, int_scratch, row_max


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _ce_fwd(x, target, ignore_index, ls, loss, lse):
    """Per row: lse[i] = logsumexp(x[i]) and the label-smoothed NLL loss[i] (0 if ignored).
    `prange` over the N rows, one row per task; the row is read in cache (max, sum, exp) and
    loss[i], lse[i] written once; scratch: one exp row and one int row per task."""
    n, c = x.shape
    for i in prange(n):
        xr = x[i]
        m = row_max(xr, c, xr[0])
        total = 0.0
        for j in range(c):
            total += xr[j]
        e = np.empty_like(xr)
        z = m + np.log(exp_into(xr, m, e, int_scratch(c, e)))
        lse[i] = z
        t = target[i]
        if t == ignore_index:
            loss[i] = 0.0
        else:
            loss[i] = (1.0 - ls) * (z - xr[t]) + ls * (z - total / c)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _ce_bwd(x, target, lse, dloss, ignore_index, ls, dx):
    """dx[i] = dloss[i] * (exp(x[i] - lse[i]) - ls / C - (1 - ls) * onehot(t)); 0 rows if ignored.
    `prange` over the N rows, one row per task; reads the x row once, writes the dx row once
    (the exp goes straight into dx); scratch: one int row per task."""
    n, c = x.shape
    for i in prange(n):
        xr, dr = x[i], dx[i]
        t = target[i]
        if t == ignore_index:
            dr[:] = 0.0
            continue
        exp_into(xr, lse[i], dr, int_scratch(c, dr))
        g = dloss[i]
        off = g * (ls / c)
        for j in range(c):
            dr[j] = dr[j] * g - off
        dr[t] -= g * (1.0 - ls)


def _check(logits: np.ndarray, target: np.ndarray) -> None:
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32 or float64 logits, got {logits.dtype}")
    if logits.ndim != 2 or not logits.flags.c_contiguous:
        raise ValueError("logits must be a C-contiguous (N, C) array")
    if target.shape != (logits.shape[0],) or target.dtype.kind not in "iu":
        raise ValueError("target must be an integer array of shape (N,)")


def _checked_target(target: np.ndarray, c: int, ignore_index: int) -> np.ndarray:
    t = np.ascontiguousarray(target, dtype=np.int64)
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if bad.any():
        raise IndexError(f"target out of range [0, {c}) at rows {np.nonzero(bad)[0][:5]}")
    return t


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, ignore_index: int,
                          label_smoothing: float):
    _check(logits, target)
    n, c = logits.shape
    t = _checked_target(target, c, ignore_index)
    loss = np.empty(n, logits.dtype)
    lse = np.empty(n, logits.dtype)
    if n:
        _ce_fwd(logits, t, int(ignore_index), float(label_smoothing), loss, lse)
    return loss, lse


def cross_entropy_backward(logits: np.ndarray, target: np.ndarray, lse: np.ndarray,
                           dloss: np.ndarray, ignore_index: int, label_smoothing: float):
    _check(logits, target)
    n, c = logits.shape
    t = _checked_target(target, c, ignore_index)
    dt = logits.dtype
    dx = np.empty_like(logits)
    if n:
        _ce_bwd(logits, t, np.ascontiguousarray(lse, dt), np.ascontiguousarray(dloss, dt),
                int(ignore_index), float(label_smoothing), dx)
    return dx
