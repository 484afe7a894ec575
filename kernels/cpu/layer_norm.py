"""LayerNorm over the last axis, forward and backward.

Each kernel is compiled twice by `parallel.parallel_njit`: a serial version on the calling
thread and a threaded one (`prange` over runs of rows), chosen per call
by `parallel.row_tasks` (one Numba thread, or under a million elements: serial, because waking
Numba's pool costs more than it saves there). Every row is computed by one task the same way
in both, so the results do not depend on the thread count, bit for bit.

Forward: each row (in L1) is read three times (sum, centred sum of squares, normalise) and
y, mean, rstd written once. Backward: tasks are fixed chunks of
``ROWS_PER_CHUNK`` rows; each writes its rows of dx and its own partial dweight / dbias row,
and the partial rows are then added in chunk order. The chunks do not depend on the thread
count, so neither do dweight and dbias. Memory: x and dy read once, dx written once, plus
2 * ceil(N / ROWS_PER_CHUNK) * D floats of partial sums.

Precision: everything runs in the input's dtype, sums included (float32 rows are summed in
float32 by vectorised lanes; a float64 accumulator widened every element and made the
float32 kernels up to twice as slow). Per-row scalars (1 / sqrt(var + eps)) are computed in
float64 and rounded once.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .parallel import parallel_njit, row_tasks
from .softmax import FASTMATH, zero

#: rows per backward task; fixed (not derived from the thread count) so that the partial sums,
#: and hence dweight and dbias, are the same for any number of threads
ROWS_PER_CHUNK = 64


def in_dtype_of(row, value):  # pragma: no cover - replaced by the overload below
    """``value`` rounded to row's float dtype (Numba keeps a float64 scalar otherwise, and every
    float32 element it meets is then widened)."""
    raise NotImplementedError


@overload(in_dtype_of, inline="always")
def _in_dtype_of_ov(row, value):
    if row.dtype == types.float32:
        return lambda row, value: np.float32(value)
    return lambda row, value: np.float64(value)


@njit(inline="always", fastmath=FASTMATH)
def row_moments(xr, eps):
    """(mean, 1 / sqrt(var + eps)) of one row, both in the row's dtype: two vectorised passes
    over the row (the sum, then the centred sum of squares), accumulated in the row's dtype."""
    d = xr.shape[0]
    s = zero(xr)
    for j in range(d):
        s += xr[j]
    mu = s / in_dtype_of(xr, d)
    v = zero(xr)
    for j in range(d):
        t = xr[j] - mu
        v += t * t
    return mu, in_dtype_of(xr, 1.0 / np.sqrt(v / d + eps))


@njit(inline="always", fastmath=FASTMATH)
def _forward_rows(x, w, b, has_w, has_b, eps, y, mean, rstd, start, stop):
    """y[i] = (x[i] - mean[i]) * rstd[i] (* w) (+ b) for rows [start, stop), saving mean and
    rstd. One loop per case of (has_w, has_b), so that none of them branches per element.
    (Inlined as a range of rows: an inlined one-row helper made LLVM's loops twice as slow.)"""
    d = x.shape[1]
    for i in range(start, stop):
        xr, yr = x[i], y[i]
        mu, r = row_moments(xr, eps)
        mean[i] = mu
        rstd[i] = r
        if has_w and has_b:
            for j in range(d):
                yr[j] = (xr[j] - mu) * r * w[j] + b[j]
        elif has_w:
            for j in range(d):
                yr[j] = (xr[j] - mu) * r * w[j]
        elif has_b:
            for j in range(d):
                yr[j] = (xr[j] - mu) * r + b[j]
        else:
            for j in range(d):
                yr[j] = (xr[j] - mu) * r


@parallel_njit(cache=True, fastmath=FASTMATH)
def _ln_fwd(x, w, b, has_w, has_b, eps, y, mean, rstd, nchunks):
    """LayerNorm of every row of x into y, mean, rstd: `prange` over nchunks runs of rows (no
    scratch); ``_ln_fwd.serial`` runs them on the calling thread."""
    n = x.shape[0]
    for c in prange(nchunks):
        _forward_rows(x, w, b, has_w, has_b, eps, y, mean, rstd, c * n // nchunks, (c + 1) * n // nchunks)


@njit(inline="always", fastmath=FASTMATH)
def _backward_chunk(dy, x, w, has_w, mean, rstd, dx, pwr, pbr, start, stop):
    """dx for rows [start, stop), and their dweight / dbias sums into pwr, pbr (zeroed here).
    Per row: one pass for the two row sums and the partials, one pass writing dx."""
    d = x.shape[1]
    for j in range(d):
        pwr[j] = 0
        pbr[j] = 0
    dinv = in_dtype_of(pwr, 1.0 / d)
    for i in range(start, stop):
        xr, gr, dr = x[i], dy[i], dx[i]
        mu, r = mean[i], rstd[i]
        sg = zero(xr)
        sgx = zero(xr)
        for j in range(d):
            h = (xr[j] - mu) * r
            g = gr[j] * w[j] if has_w else gr[j]
            sg += g
            sgx += g * h
            pwr[j] += gr[j] * h
            pbr[j] += gr[j]
        mean_g, mean_gx = sg * dinv, sgx * dinv
        for j in range(d):
            h = (xr[j] - mu) * r
            g = gr[j] * w[j] if has_w else gr[j]
            dr[j] = r * (g - mean_g - h * mean_gx)


@njit(inline="always")
def _add_partials(pw, pb, dw, db):
    """dw, db = the column sums of the partial rows pw, pb, added in chunk order."""
    dw[:] = pw[0]
    db[:] = pb[0]
    for c in range(1, pw.shape[0]):
        pwr, pbr = pw[c], pb[c]
        for j in range(dw.shape[0]):
            dw[j] += pwr[j]
            db[j] += pbr[j]


@parallel_njit(cache=True, fastmath=FASTMATH)
def _ln_bwd(dy, x, w, has_w, mean, rstd, dx, pw, pb, dw, db):
    """dx, dweight (dw), dbias (db): `prange` over the chunks of ROWS_PER_CHUNK rows, each into its
    partial rows pw[c], pb[c], added afterwards in chunk order (``_ln_bwd.serial``: chunk after
    chunk on the calling thread, the same sums)."""
    n = x.shape[0]
    for c in prange(pw.shape[0]):
        _backward_chunk(dy, x, w, has_w, mean, rstd, dx, pw[c], pb[c],
                        c * ROWS_PER_CHUNK, min(n, (c + 1) * ROWS_PER_CHUNK))
    _add_partials(pw, pb, dw, db)


def _check2d(*arrays: np.ndarray) -> None:
    dt = arrays[0].dtype
    if dt not in (np.float32, np.float64):
        raise TypeError(f"expected float32 or float64, got {dt}")
    for a in arrays:
        if a.ndim != 2 or a.shape != arrays[0].shape or a.dtype != dt or not a.flags.c_contiguous:
            raise ValueError("expected C-contiguous (N, D) arrays of one shape and dtype")


def _vec(a, d: int, dt) -> np.ndarray:
    """a weight or bias as a contiguous (d,) array of dtype dt; a 1-element stand-in for None."""
    if a is None:
        return np.zeros(1, dt)
    if a.shape != (d,):
        raise ValueError(f"expected shape ({d},), got {a.shape}")
    return np.ascontiguousarray(a, dtype=dt)


def layer_norm_forward(x: np.ndarray, weight, bias, eps: float):
    _check2d(x)
    n, d = x.shape
    dt = x.dtype
    y = np.empty_like(x)
    mean, rstd = np.empty(n, dt), np.empty(n, dt)
    if x.size:
        tasks = row_tasks(n, x.size)
        kernel = _ln_fwd.threaded if tasks else _ln_fwd.serial
        kernel(x, _vec(weight, d, dt), _vec(bias, d, dt), weight is not None, bias is not None,
               float(eps), y, mean, rstd, max(tasks, 1))
    return y, mean, rstd


def layer_norm_backward(dy: np.ndarray, x: np.ndarray, weight, mean: np.ndarray,
                        rstd: np.ndarray):
    _check2d(dy, x)
    n, d = x.shape
    dt = x.dtype
    dx = np.empty_like(x)
    dw, db = np.zeros(d, dt), np.zeros(d, dt)
    if x.size:
        nchunks = -(-n // ROWS_PER_CHUNK)
        pw, pb = np.empty((nchunks, d), dt), np.empty((nchunks, d), dt)
        kernel = _ln_bwd.threaded if row_tasks(n, x.size) else _ln_bwd.serial
        kernel(dy, x, _vec(weight, d, dt), weight is not None, np.ascontiguousarray(mean, dt),
               np.ascontiguousarray(rstd, dt), dx, pw, pb, dw, db)
    return dx, (dw if weight is not None else None), db
