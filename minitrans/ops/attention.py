"""Scaled dot-product attention as ONE fused Function with the hand-derived backward.

    S = scale·Q·Kᵀ + bias      P = softmax(S) by rows      O = P·V
    dV = Pᵀ·dO    dP = dO·Vᵀ    dS = P ⊙ (dP − rowsum(dO ⊙ O))    dQ = scale·dS·K    dK = scale·dSᵀ·Q

Only Q, K, V, O and the row log-sum-exp are saved; the backend's tiled kernels recompute P
tile by tile (see docs/attention.md for the derivation and kernels/ for the tiles).
"""
from __future__ import annotations

from ..autograd.function import Function


class ScaledDotProductAttention(Function):
    """softmax(scale·Q·Kᵀ + bias)·V over (B, Tq, d) × (B, Tk, d) × (B, Tk, dv)"""

    @staticmethod
    def forward(ctx, q, k, v, bias, is_causal, scale):
        o, lse = ctx.xp.attention_forward(q, k, v, bias, is_causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.bias, ctx.is_causal, ctx.scale = bias, is_causal, scale
        return o

    @staticmethod
    def backward(ctx, g):
        q, k, v, o, lse = ctx.saved_arrays
        xp = ctx.xp
        dq, dk, dv = xp.attention_backward(q, k, v, o, lse, xp.ascontiguousarray(g), ctx.bias,
                                           ctx.is_causal, ctx.scale)
        return dq, dk, dv, None, None, None
