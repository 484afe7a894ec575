"""Attention for many short sequences (training shapes: batch·heads ≫ 1, T ≤ SMALL_T).

The tiled path (attention.py) pays Python and thread-pool costs per (batch·head, tile)
unit, which dominate when each unit is a 17×17 score matrix. Here one Numba kernel runs
`prange` over the flattened batch; each task keeps its whole (Tq, Tk) score block (at
most SMALL_T² elements: the tile *is* the sequence) in a private buffer.

Forward per batch entry b: S = scale·q·kᵀ + bias (causal: key j > i is −inf), row max m,
P = exp(S − m), l = Σ P, o = P·v / l, lse = m + log l; a row with every key masked gives
o = 0, lse = −inf. Backward recomputes P = exp(S − lse) and applies
dV += Pᵀ·dO, dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O)), dQ = scale·dS·K, dK += scale·dSᵀ·Q.
Memory plan: reads q, k, v (and do, o) once per task, writes o/lse (dq, dk, dv) once; one
(Tq, Tk) float64 scratch per task. Accumulation in float64.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

SMALL_T = 128          # use this path when Tq ≤ SMALL_T and Tk ≤ SMALL_T


@njit(parallel=True, cache=True)
def _fwd(q, k, v, bias, has_bias, causal, scale, o, lse):
    B, Tq, d = q.shape
    Tk, dv = k.shape[1], v.shape[2]
    for b in prange(B):
        s = np.empty(Tk)
        for i in range(Tq):
            m = -np.inf
            for j in range(Tk):
                if causal and j > i:
                    s[j] = -np.inf
                    continue
                acc = 0.0
                for c in range(d):
                    acc += q[b, i, c] * k[b, j, c]
                val = acc * scale
                if has_bias:
                    val += bias[b, i, j]
                s[j] = val
                if val > m:
                    m = val
            if m == -np.inf:
                lse[b, i] = -np.inf
                for c in range(dv):
                    o[b, i, c] = 0.0
                continue
            tot = 0.0
            for j in range(Tk):
                p = math.exp(s[j] - m)
                s[j] = p
                tot += p
            inv = 1.0 / tot
            for c in range(dv):
                acc = 0.0
                for j in range(Tk):
                    acc += s[j] * v[b, j, c]
                o[b, i, c] = acc * inv
            lse[b, i] = m + math.log(tot)


@njit(parallel=True, cache=True)
def _bwd(q, k, v, o, lse, do, bias, has_bias, causal, scale, dq, dk, dv):
    B, Tq, d = q.shape
    Tk, dvn = k.shape[1], v.shape[2]
    for b in prange(B):
        dka = np.zeros((Tk, d))
        dva = np.zeros((Tk, dvn))
        for i in range(Tq):
            li = lse[b, i]
            if li == -np.inf:          # fully masked row: no gradient flows
                for c in range(d):
                    dq[b, i, c] = 0.0
                continue
            D = 0.0
            for c in range(dvn):
                D += do[b, i, c] * o[b, i, c]
            dqa = np.zeros(d)
            for j in range(Tk):
                if causal and j > i:
                    break
                acc = 0.0
                for c in range(d):
                    acc += q[b, i, c] * k[b, j, c]
                sv = acc * scale
                if has_bias:
                    sv += bias[b, i, j]
                if sv == -np.inf:
                    continue
                p = math.exp(sv - li)
                dp = 0.0
                for c in range(dvn):
                    dp += do[b, i, c] * v[b, j, c]
                    dva[j, c] += p * do[b, i, c]
                ds = p * (dp - D) * scale
                for c in range(d):
                    dqa[c] += ds * k[b, j, c]
                    dka[j, c] += ds * q[b, i, c]
            for c in range(d):
                dq[b, i, c] = dqa[c]
        for j in range(Tk):
            for c in range(d):
                dk[b, j, c] = dka[j, c]
            for c in range(dvn):
                dv[b, j, c] = dva[j, c]


def _bias_arg(bias, dt):
    if bias is None:
        return np.zeros((1, 1, 1), dt), False
    return bias, True


def small_forward(q, k, v, bias, is_causal: bool, scale: float):
    B, Tq, _ = q.shape
    o = np.empty((B, Tq, v.shape[2]), q.dtype)
    lse = np.empty((B, Tq), q.dtype)
    b, has = _bias_arg(bias, q.dtype)
    _fwd(q, k, v, b, has, bool(is_causal), float(scale), o, lse)
    return o, lse


def small_backward(q, k, v, o, lse, do, bias, is_causal: bool, scale: float):
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    b, has = _bias_arg(bias, q.dtype)
    _bwd(q, k, v, o, lse, do, b, has, bool(is_causal), float(scale), dq, dk, dv)
    return dq, dk, dv
