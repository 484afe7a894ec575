"""Row softmax / log-softmax, forward and backward, plus the vectorised exp shared by
the other CPU kernels.

Parallelisation: `prange` over rows; each row is one task, processed entirely in cache.
Memory plan: forward reads x once and writes y once (the row max, the exp and the
normalisation run on the row while it sits in L1/L2); backward reads y and dy once and
writes dx once. No temporaries beyond one int scratch row per task.

Why a hand-written exp: without Intel SVML, LLVM turns `np.exp` into a scalar libm call
per element, which is ~3x slower than the rest of the row pass. `exp_into` splits
exp(x) = 2^k * p(r) (Cody-Waite reduction, Taylor polynomial on |r| <= ln2/2), writes
p into the row and the exponent bits 2^k into an int scratch row, then multiplies the
two through a float view of the scratch: every loop is branch-free and vectorises.
Relative error ~2e-7 (float32) / ~2e-16 (float64). Arguments <= -88 (float32) or
-709 (float64), -inf included, give exactly 0. `row_max` is the vectorised row max.

fastmath: FASTMATH leaves out 'nnan' and 'ninf', because -inf is the mask value.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_LOG2E = 1.4426950408889634
_LN2_HI32, _LN2_LO32 = 0.693145751953125, 1.428606765330187e-06
_LN2_HI64, _LN2_LO64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10


# ------------------------------------------------------------------ shared njit helpers
def int_scratch(n, row):  # pragma: no cover - replaced by the overloads below
    """An int array of n elements with the width of row's float dtype."""
    raise NotImplementedError


def zero(row):  # pragma: no cover
    """0 in row's float dtype."""
    raise NotImplementedError


def recip(s):  # pragma: no cover
    """1 / s in s's own float type (numba would promote 1 / float32 to float64)."""
    raise NotImplementedError


def exp_into(src, shift, dst, ib):  # pragma: no cover
    """dst[:] = exp(src[:] - shift) for distinct src, dst; returns sum(dst).
    ib: int scratch of at least len(dst) elements (see int_scratch)."""
    raise NotImplementedError


def exp_inplace(row, shift, ib):  # pragma: no cover
    """row[:] = exp(row[:] - shift); returns sum(row).
    NOTE: a separate function, not exp_into(row, shift, row, ib): with two pointers that
    alias, LLVM's runtime overlap check fails and the loop runs scalar (6x slower)."""
    raise NotImplementedError


@overload(int_scratch, inline="always")
def _int_scratch_ov(n, row):
    if row.dtype == types.float32:
        return lambda n, row: np.empty(n, np.int32)
    return lambda n, row: np.empty(n, np.int64)


@overload(zero, inline="always")
def _zero_ov(row):
    if row.dtype == types.float32:
        return lambda row: np.float32(0.0)
    return lambda row: 0.0


@overload(recip, inline="always")
def _recip_ov(s):
    if s == types.float32:
        return lambda s: np.float32(1.0) / s
    return lambda s: 1.0 / s


@njit(inline="always", fastmath=FASTMATH)
def _split32(x):
    """exp(x) = p * 2^k: returns (p, bit pattern of the float32 2^k)."""
    x = min(max(x, np.float32(-88.0)), np.float32(88.0))
    kf = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
    r = x - kf * np.float32(_LN2_HI32) - kf * np.float32(_LN2_LO32)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p, (np.int32(kf) + np.int32(127)) << np.int32(23)     # k = -127 gives +0.0


@njit(inline="always", fastmath=FASTMATH)
def _split64(x):
    """exp(x) = p * 2^k for float64 (x clamped to [-709, 709]): returns (p, bit pattern of
    the float64 2^k). Inlined scalar helper: registers only."""
    x = min(max(x, -709.0), 709.0)
    kf = np.floor(x * _LOG2E + 0.5)
    r = x - kf * _LN2_HI64 - kf * _LN2_LO64
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p, (np.int64(kf) + np.int64(1023)) << np.int64(52)


@njit(inline="always", fastmath=FASTMATH)
def _scale_by_bits(dst, two_k, n):
    """dst[j] *= two_k[j] for j < n (two_k: the float view of the 2^k bit patterns); returns
    sum(dst[:n]). Inlined serial loop over one row, in place on dst; no scratch."""
    s = dst[0] - dst[0]
    for j in range(n):
        e = dst[j] * two_k[j]
        dst[j] = e
        s += e
    return s


@overload(exp_into, jit_options={"fastmath": FASTMATH})
def _exp_into_ov(src, shift, dst, ib):
    """Numba implementation of `exp_into` (float32 / float64 rows): one branch-free pass writes
    p into dst and the 2^k bits into ib, then `_scale_by_bits`. Inlined per row into the
    calling kernel; reads src once, writes dst once; ib is the caller's int scratch."""
    split, ftype = (_split32, np.float32) if dst.dtype == types.float32 else (_split64, np.float64)

    def impl(src, shift, dst, ib):
        n = dst.shape[0]
        for j in range(n):
            dst[j], ib[j] = split(src[j] - shift)
        return _scale_by_bits(dst, ib[:n].view(ftype), n)
    return impl


@overload(exp_inplace, jit_options={"fastmath": FASTMATH})
def _exp_inplace_ov(row, shift, ib):
    """Numba implementation of `exp_inplace`: as `_exp_into_ov` with src = dst = row (a single
    pointer, so the loops vectorise). Inlined per row; ib is the caller's int scratch."""
    split, ftype = (_split32, np.float32) if row.dtype == types.float32 else (_split64, np.float64)

    def impl(row, shift, ib):
        n = row.shape[0]
        for j in range(n):
            row[j], ib[j] = split(row[j] - shift)
        return _scale_by_bits(row, ib[:n].view(ftype), n)
    return impl


@njit(inline="always", fastmath=FASTMATH)
def row_max(r, n, init):
    """max(init, r[:n]); 8 independent accumulators so that LLVM vectorises it
    (a single-accumulator float max reduction stays scalar: 3x slower)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = init
    n8 = n - n % 8
    for j in range(0, n8, 8):
        m0 = max(m0, r[j])
        m1 = max(m1, r[j + 1])
        m2 = max(m2, r[j + 2])
        m3 = max(m3, r[j + 3])
        m4 = max(m4, r[j + 4])
        m5 = max(m5, r[j + 5])
        m6 = max(m6, r[j + 6])
        m7 = max(m7, r[j + 7])
    for j in range(n8, n):
        m0 = max(m0, r[j])
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@njit(inline="always", fastmath=FASTMATH)
def row_sum(r, n):
    """sum(r[:n]), inlined into the calling kernel.

    The cross-entropy kernels sum their exp row with this instead of taking `exp_into`'s return
    value, because they exist twice (serial and threaded) and must agree bit for bit: exp_into
    is compiled as a function of its own, and how LLVM vectorised its sum (hence the last bit)
    was seen to change with the compile context; a kernel compiled in one process and its twin
    loaded from Numba's cache then disagreed by an ulp. The inlined sum gave the same bits in
    every combination tried."""
    s = zero(r)
    for j in range(n):
        s += r[j]
    return s


# ----------------------------------------------------------------------------- kernels
@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _softmax_fwd(x, y):
    """y = softmax(x) by rows. `prange` over the N rows, one row per task: max, exp into y,
    then y scaled in place; reads x once, writes y once; scratch: one int row per task."""
    n, c = x.shape
    for i in prange(n):
        xr, yr = x[i], y[i]
        m = row_max(xr, c, xr[0])
        inv = recip(exp_into(xr, m, yr, int_scratch(c, yr)))
        for j in range(c):
            yr[j] *= inv


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _softmax_bwd(y, dy, dx):
    """dx = y * (dy - sum(y * dy)) by rows. `prange` over the N rows, one row per task; the
    cached y, dy rows are read twice, dx written once; no scratch."""
    n, c = y.shape
    for i in prange(n):
        yr, gr, dr = y[i], dy[i], dx[i]
        s = yr[0] * gr[0]
        for j in range(1, c):
            s += yr[j] * gr[j]
        for j in range(c):
            dr[j] = yr[j] * (gr[j] - s)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _log_softmax_fwd(x, y):
    """y = x - (max + log sum exp(x - max)) by rows. `prange` over the N rows, one row per task;
    exp(x - max) goes into y (used as scratch), then y is overwritten; one int row per task."""
    n, c = x.shape
    for i in prange(n):
        xr, yr = x[i], y[i]
        m = row_max(xr, c, xr[0])
        shift = m + np.log(exp_into(xr, m, yr, int_scratch(c, yr)))
        for j in range(c):
            yr[j] = xr[j] - shift


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _log_softmax_bwd(y, dy, dx):
    """dx = dy - exp(y) * sum(dy) by rows. `prange` over the N rows, one row per task; exp(y)
    is written into dx, then dx updated in place; reads y, dy once; one int row per task."""
    n, c = y.shape
    for i in prange(n):
        yr, gr, dr = y[i], dy[i], dx[i]
        s = gr[0]
        for j in range(1, c):
            s += gr[j]
        exp_into(yr, zero(yr), dr, int_scratch(c, dr))
        for j in range(c):
            dr[j] = gr[j] - dr[j] * s


# ---------------------------------------------------------------------------- wrappers
def _check(*arrays: np.ndarray) -> None:
    dt = arrays[0].dtype
    if dt not in (np.float32, np.float64):
        raise TypeError(f"expected float32 or float64, got {dt}")
    for a in arrays:
        if a.ndim != 2 or a.shape != arrays[0].shape:
            raise ValueError(f"expected (N, C) arrays of one shape, got {a.shape}")
        if a.dtype != dt:
            raise TypeError(f"dtype mismatch: {a.dtype} vs {dt}")
        if not a.flags.c_contiguous:
            raise ValueError("expected C-contiguous arrays")


def _rowwise(kernel, *inputs: np.ndarray) -> np.ndarray:
    """Check the (N, C) inputs, run ``kernel(*inputs, out)`` into a new array like the first; return it."""
    _check(*inputs)
    out = np.empty_like(inputs[0])
    if out.size:
        kernel(*inputs, out)
    return out


def softmax_forward(x: np.ndarray) -> np.ndarray:
    return _rowwise(_softmax_fwd, x)


def softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return _rowwise(_softmax_bwd, y, dy)


def log_softmax_forward(x: np.ndarray) -> np.ndarray:
    return _rowwise(_log_softmax_fwd, x)


def log_softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return _rowwise(_log_softmax_bwd, y, dy)


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float with the bit pattern of the int ``bits`` (int32 -> float32, int64 -> float64): one
    register move that LLVM vectorises, so the exp below needs no int scratch row and no second pass
    (softmax.py's `exp_inplace` stores the bits and reads them back as floats)."""
    ftype = {types.int32: types.float32, types.int64: types.float64}.get(bits)
    if ftype is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(ftype))
    return ftype(bits), codegen


def exp_scalar(x):  # pragma: no cover - replaced by the overload below
    """exp(x) in x's own float type, as softmax.py computes it (same polynomial, same bits)."""
    raise NotImplementedError


@overload(exp_scalar, inline="always", jit_options={"fastmath": FASTMATH})
def _exp_ov(x):
    # Numba widens int32 arithmetic to int64: the float32 pattern is cut back to its 32 bits
    split, itype = (_split32, np.int32) if x == types.float32 else (_split64, np.int64)

    def impl(x):
        p, bits = split(x)
        return p * _float_from_bits(itype(bits))
    return impl
