"""Kernels for incremental decoding (inference only, no backward): a few query rows against a
key/value cache read in place, and residual + LayerNorm in one pass.

``cached_attention``: queries q (B, T, H, d) at absolute positions past .. past+T-1 attend to
the first ``length`` rows of cache buffers k, v (B, H, capacity, d): the buffers grow
geometrically, so the valid prefix is a strided view that is never copied or concatenated.
Work units are (batch, head, query) triples in a `prange`; each computes its score row into a
scratch row of ``length`` floats (scale, additive key bias, causal limit), the max, the
vectorised exp of softmax.py, and the weighted sum of value rows into its output row.
No (T, length) matrix is stored beyond one score row per unit. A query whose every key is
masked gives a zero output row (as the training kernels do).

``add_layer_norm``: x += delta in place, then y = LayerNorm(x) (row moments summed in the row's dtype,
by layer_norm.row_moments); one pass over the residual stream instead of an add and a norm.

The NumPy versions ``*_reference`` are the readable oracles the tests compare against.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .layer_norm import row_moments
from .parallel import parallel_njit
from .softmax import FASTMATH, exp_inplace, int_scratch, recip, zero


@parallel_njit(cache=True, fastmath=FASTMATH)
def _cached_attention(q, k, v, length, past, causal, key_bias, has_bias, scale, out):
    B, T, H, d = q.shape
    for unit in prange(B * H * T):
        b, rest = unit // (H * T), unit % (H * T)
        h, t = rest // T, rest % T
        n = min(past + t + 1, length) if causal else length
        qrow, orow = q[b, t, h], out[b, t, h]
        orow[:] = 0
        if n <= 0:
            continue
        scores = np.empty(n, q.dtype)
        exp_scratch = int_scratch(n, scores)
        best = -np.inf
        for j in range(n):
            krow = k[b, h, j]
            acc = zero(scores)
            for c in range(d):
                acc += qrow[c] * krow[c]
            acc *= scale
            if has_bias:
                acc += key_bias[b, j]
            scores[j] = acc
            best = max(best, acc)
        if best == -np.inf:                      # every key masked: attend to nothing
            continue
        inv = recip(exp_inplace(scores, best, exp_scratch))
        for j in range(n):
            w = scores[j] * inv
            vrow = v[b, h, j]
            for c in range(d):
                orow[c] += w * vrow[c]


_NO_BIAS: dict = {}        # a (1, 1) placeholder per dtype for the kernel's unused bias argument
_NO_CROSS: dict = {}       # a (1, 1, 1, 1) placeholder per dtype for decode_layer's unused cross-attention cache


def _placeholder(table: dict, dtype, ndim: int):
    """A zero array of shape (1,) * ndim and ``dtype``, made on first use and kept in ``table``."""
    a = table.get(dtype)
    if a is None:
        a = table[dtype] = np.zeros((1,) * ndim, dtype)
    return a


def cached_attention(q, k, v, length: int, past: int, causal: bool, key_bias, scale: float, out=None):
    """softmax(q·kᵀ·scale + key_bias [causal]) · v for q (B, T, H, d) against k[:, :, :length],
    v[:, :, :length] (buffers (B, H, capacity, d), any strides); returns ``out`` (B, T, H, d).

    Query t sits at position past + t; with ``causal`` it sees keys 0 .. past + t.
    ``key_bias`` (B, length) is added to every query's scores (−inf = padding), or None."""
    if out is None:
        out = np.empty(q.shape, q.dtype)
    has_bias = key_bias is not None
    bias = key_bias if has_bias else _placeholder(_NO_BIAS, q.dtype, 2)
    _cached_attention(q, k, v, length, past, bool(causal), bias, has_bias, q.dtype.type(scale), out)
    return out


def cached_attention_reference(q, k, v, length, past, causal, key_bias, scale):
    """The same result by NumPy: per (batch, head) the full score matrix, masked, softmaxed."""
    B, T, H, d = q.shape
    qh = q.transpose(0, 2, 1, 3).astype(np.float64)                 # (B, H, T, d)
    kh, vh = k[:, :, :length].astype(np.float64), v[:, :, :length].astype(np.float64)
    s = qh @ kh.transpose(0, 1, 3, 2) * scale                        # (B, H, T, length)
    if key_bias is not None:
        s = s + key_bias[:, None, None, :]
    if causal:
        s = np.where(np.arange(length)[None, :] > past + np.arange(T)[:, None], -np.inf, s)
    m = s.max(-1, keepdims=True)
    alive = np.isfinite(m)
    p = np.where(alive, np.exp(s - np.where(alive, m, 0)), 0)
    p = p / np.where(alive, p.sum(-1, keepdims=True), 1)
    return (p @ vh).transpose(0, 2, 1, 3).astype(q.dtype)


@njit(inline="always", fastmath=FASTMATH)
def _norm_row(xr, w, b, eps, yr):
    """yr = LayerNorm(xr) * w + b for one row (moments summed in float64)."""
    mu, r = row_moments(xr, eps)
    for j in range(xr.shape[0]):
        yr[j] = (xr[j] - mu) * r * w[j] + b[j]


@njit(cache=True, fastmath=FASTMATH)
def _add_layer_norm(x, delta, has_delta, w, b, eps, y):
    n, d = x.shape
    for i in range(n):
        xr = x[i]
        if has_delta:
            dr = delta[i]
            for j in range(d):
                xr[j] += dr[j]
        _norm_row(xr, w, b, eps, y[i])


def add_layer_norm(x, delta, weight, bias, eps: float):
    """x += delta (in place; ``delta`` None adds nothing), then LayerNorm(x) over the last dim.
    x, delta: C-contiguous (..., D); returns y of x's shape."""
    x2 = x.reshape(-1, x.shape[-1])
    y = np.empty_like(x2)
    has_delta = delta is not None
    _add_layer_norm(x2, delta.reshape(x2.shape) if has_delta else x2, has_delta, weight, bias, float(eps), y)
    return y.reshape(x.shape)


def add_layer_norm_reference(x, delta, weight, bias, eps):
    """NumPy: the new residual x + delta and its LayerNorm (float64 moments)."""
    s = (x if delta is None else x + delta).astype(np.float64)
    mu = s.mean(-1, keepdims=True)
    var = ((s - mu) ** 2).mean(-1, keepdims=True)
    return s.astype(x.dtype), ((s - mu) / np.sqrt(var + eps) * weight + bias).astype(x.dtype)


# ----------------------------------------------------------------------------- one whole layer
@njit(inline="always", fastmath=FASTMATH)
def _affine(w, b, x, y):
    """y[m] = w·x[m] + b for the rows m of x (out, in) weights as a Linear stores them: each weight
    row is read once for all rows of x (a decode step has a few rows: memory-bound)."""
    n_out, n_in = w.shape
    for o in range(n_out):
        wr = w[o]
        for m in range(x.shape[0]):
            xr = x[m]
            acc = zero(y)
            for i in range(n_in):
                acc += wr[i] * xr[i]
            y[m, o] = acc + b[o]


@njit(inline="always", fastmath=FASTMATH)
def _norm_rows(x, w, b, eps, y):
    for m in range(x.shape[0]):
        _norm_row(x[m], w, b, eps, y[m])


@njit(inline="always", fastmath=FASTMATH)
def _residual(x, out, pre, w, b, eps):
    """Pre-LN: x += out. Post-LN: x = LayerNorm(x + out)."""
    x += out
    if not pre:
        _norm_rows(x, w, b, eps, x)


@njit(inline="always", fastmath=FASTMATH)
def _attend_row(q, k, v, n, bias, has_bias, scale, scores, exp_scratch, o):
    """o = softmax(q·k[:n]ᵀ·scale + bias[:n])·v[:n] for one head (zeros if every key is masked)."""
    best = -np.inf
    for j in range(n):
        kr = k[j]
        acc = zero(scores)
        for c in range(q.shape[0]):
            acc += q[c] * kr[c]
        acc *= scale
        if has_bias:
            acc += bias[j]
        scores[j] = acc
        best = max(best, acc)
    o[:] = 0
    if best == -np.inf:
        return
    inv = recip(exp_inplace(scores[:n], best, exp_scratch))
    for j in range(n):
        wgt = scores[j] * inv
        vr = v[j]
        for c in range(o.shape[0]):
            o[c] += wgt * vr[c]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _decode_layer(x, batch, heads, pre, eps, scale, norm1_w, norm1_b, w_in, b_in, w_out, b_out, keys, values,
                  past, causal, cos, sin, rotary, cross, norm2_w, norm2_b, cross_wq, cross_bq, cross_wo, cross_bo,
                  cross_keys, cross_values, cross_len, key_bias, has_bias, ffnorm_w, ffnorm_b, w1, b1, w2, b2):
    N, E = x.shape
    T, hd = N // batch, E // heads
    half = hd // 2
    a, o, out = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    scores = np.empty(max(past + T, cross_len), x.dtype)
    exp_scratch = int_scratch(scores.shape[0], scores)
    # self-attention: q, k, v of the new rows; k, v written into the cache rows past .. past+T-1
    if pre:
        _norm_rows(x, norm1_w, norm1_b, eps, a)
    qkv = np.empty((N, 3 * E), x.dtype)
    _affine(w_in, b_in, a if pre else x, qkv)
    for m in range(N):
        bi, t = m // T, m % T
        for h in range(heads):
            for part in range(2 if rotary else 0):          # rotate q and k by position past + t
                r = qkv[m, part * E + h * hd: part * E + (h + 1) * hd]
                for i in range(half):
                    x1, x2 = r[i], r[i + half]
                    r[i] = x1 * cos[t, i] - x2 * sin[t, i]
                    r[i + half] = x2 * cos[t, i + half] + x1 * sin[t, i + half]
            keys[bi, h, past + t] = qkv[m, E + h * hd: E + (h + 1) * hd]
            values[bi, h, past + t] = qkv[m, 2 * E + h * hd: 2 * E + (h + 1) * hd]
    for m in range(N):
        bi, t = m // T, m % T
        n = past + t + 1 if causal else past + T
        for h in range(heads):
            _attend_row(qkv[m, h * hd:(h + 1) * hd], keys[bi, h], values[bi, h], n, key_bias[0], False, scale,
                        scores, exp_scratch, o[m, h * hd:(h + 1) * hd])
    _affine(w_out, b_out, o, out)
    _residual(x, out, pre, norm1_w, norm1_b, eps)
    # cross-attention over the encoder memory's cached keys/values
    if cross:
        if pre:
            _norm_rows(x, norm2_w, norm2_b, eps, a)
        q = np.empty_like(x)
        _affine(cross_wq, cross_bq, a if pre else x, q)
        for m in range(N):
            bi = m // T
            for h in range(heads):
                _attend_row(q[m, h * hd:(h + 1) * hd], cross_keys[bi, h], cross_values[bi, h], cross_len,
                            key_bias[bi], has_bias, scale, scores, exp_scratch, o[m, h * hd:(h + 1) * hd])
        _affine(cross_wo, cross_bo, o, out)
        _residual(x, out, pre, norm2_w, norm2_b, eps)
    # feed-forward (ReLU)
    if pre:
        _norm_rows(x, ffnorm_w, ffnorm_b, eps, a)
    hidden = np.empty((N, w1.shape[0]), x.dtype)
    _affine(w1, b1, a if pre else x, hidden)
    for m in range(N):
        for j in range(hidden.shape[1]):
            hidden[m, j] = max(hidden[m, j], 0)
    _affine(w2, b2, hidden, out)
    _residual(x, out, pre, ffnorm_w, ffnorm_b, eps)


def decode_layer(x, batch: int, heads: int, pre: bool, eps: float, norms, self_attn, cache_rows, past: int,
                 causal: bool, rotary_tables, cross, ff):
    """One transformer layer for a few new rows x (B·T, E) (updated in place, the residual stream),
    in one call: its norms, the q/k/v matmul, the new keys/values written into the cache buffers
    at rows past .. past+T-1, attention over them (causal: query t sees keys up to past + t), the
    output projection, the optional cross-attention and the ReLU feed-forward. Pre-LN when ``pre``.

    norms: (weight, bias, eps) of norm1, norm2 (and norm3 with ``cross``); self_attn:
    (w_in, b_in, w_out, b_out); cache_rows: the (key, value) buffers (B, H, capacity, hd);
    rotary_tables: (cos, sin) (T, hd) for positions past .., or None; cross: None or (w_q, b_q,
    w_out, b_out, key buffer, value buffer, length, key_bias (B, length) or None);
    ff: (w1, b1, w2, b2)."""
    dt = x.dtype
    empty2, empty4 = _placeholder(_NO_BIAS, dt, 2), _placeholder(_NO_CROSS, dt, 4)   # for unused arguments
    cos, sin = rotary_tables if rotary_tables is not None else (empty2, empty2)
    (norm1_w, norm1_b, _), (norm2_w, norm2_b, _) = norms[0], norms[1]
    ffnorm_w, ffnorm_b, _ = norms[-1]
    has_cross = cross is not None
    *cross_arrays, key_bias = cross if has_cross else (empty2, norm1_b, empty2, norm1_b, empty4, empty4, 0, None)
    has_bias = key_bias is not None
    scale = dt.type(1.0 / np.sqrt(x.shape[1] // heads))
    _decode_layer(x, batch, heads, pre, float(eps), scale, norm1_w, norm1_b, *self_attn, cache_rows[0],
                  cache_rows[1], past, bool(causal), cos, sin, rotary_tables is not None, has_cross, norm2_w, norm2_b,
                  *cross_arrays, key_bias if has_bias else empty2, has_bias, ffnorm_w, ffnorm_b, *ff)
