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

``add_layer_norm``: x += delta in place, then y = LayerNorm(x) (float64 sums, as
layer_norm.py); one pass over the residual stream instead of an add and a norm.

The NumPy versions ``*_reference`` are the readable oracles the tests compare against.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .softmax import FASTMATH, exp_inplace, int_scratch, recip, zero


@njit(parallel=True, cache=True, fastmath=FASTMATH)
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
        ib = int_scratch(n, scores)
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
        inv = recip(exp_inplace(scores, best, ib))
        for j in range(n):
            w = scores[j] * inv
            vrow = v[b, h, j]
            for c in range(d):
                orow[c] += w * vrow[c]


_NO_BIAS: dict = {}        # a (1, 1) placeholder per dtype for the kernel's unused bias argument


def cached_attention(q, k, v, length: int, past: int, causal: bool, key_bias, scale: float, out=None):
    """softmax(q·kᵀ·scale + key_bias [causal]) · v for q (B, T, H, d) against k[:, :, :length],
    v[:, :, :length] (buffers (B, H, capacity, d), any strides); returns ``out`` (B, T, H, d).

    Query t sits at position past + t; with ``causal`` it sees keys 0 .. past + t.
    ``key_bias`` (B, length) is added to every query's scores (−inf = padding), or None."""
    if out is None:
        out = np.empty(q.shape, q.dtype)
    has_bias = key_bias is not None
    bias = key_bias if has_bias else _NO_BIAS.setdefault(q.dtype, np.zeros((1, 1), q.dtype))
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


@njit(cache=True, fastmath=FASTMATH)
def _add_layer_norm(x, delta, has_delta, w, b, eps, y):
    n, d = x.shape
    for i in range(n):
        xr, yr = x[i], y[i]
        if has_delta:
            dr = delta[i]
            for j in range(d):
                xr[j] += dr[j]
        s = 0.0
        for j in range(d):
            s += xr[j]
        mu = s / d
        var = 0.0
        for j in range(d):
            t = xr[j] - mu
            var += t * t
        r = 1.0 / np.sqrt(var / d + eps)
        for j in range(d):
            yr[j] = (xr[j] - mu) * r * w[j] + b[j]


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
