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


class PackedSelfAttention(Function):
    """Multi-head self-attention read straight from the packed in-projection ``qkv`` (B, T, 3·E),
    laid out [Q | K | V] with each part [head 0 | head 1 | ...] of ``head_dim`` columns, as
    ``MultiheadAttention``'s one GEMM makes it; returns the heads' outputs side by side (B, T, E).

    Why one op: the composed path (chunk into Q, K, V, split heads, attend, merge heads) is about
    ten graph nodes, and its backward fills three (B, T, 3·E) zero arrays for the chunk's pieces
    and adds them. Here the backward writes dQ, dK and dV once each into one new (B, T, 3·E)
    gradient. ``bias`` is None or an array broadcastable to (B·H, T, T) (the fused kernels' form).
    """

    @staticmethod
    def forward(ctx, qkv, heads, bias, is_causal, scale):
        xp = ctx.xp
        B, T, E3 = qkv.shape
        hd = E3 // (3 * heads)
        parts = xp.split_at(xp.reshape(qkv, (B, T, 3 * heads, hd)), [heads, 2 * heads], axis=2)
        # each part (B, T, H, hd) -> C-contiguous (B·H, T, hd), the layout the kernels take
        q, k, v = (xp.reshape(xp.ascontiguousarray(xp.transpose(p, (0, 2, 1, 3))), (B * heads, T, hd))
                   for p in parts)
        o, lse = xp.attention_forward(q, k, v, bias, is_causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.bias, ctx.is_causal, ctx.scale, ctx.heads = bias, is_causal, scale, heads
        return _merge_heads(xp, o, B, heads)

    @staticmethod
    def backward(ctx, g):
        q, k, v, o, lse = ctx.saved_arrays
        xp, H = ctx.xp, ctx.heads
        B, T, E = g.shape
        hd = E // H
        do = xp.reshape(xp.ascontiguousarray(xp.transpose(xp.reshape(g, (B, T, H, hd)), (0, 2, 1, 3))),
                        (B * H, T, hd))
        grads = xp.attention_backward(q, k, v, o, lse, do, ctx.bias, ctx.is_causal, ctx.scale)
        # (B·H, T, hd) each, viewed as (B, T, H, hd) and joined along the packed head axis
        heads_last = [xp.transpose(xp.reshape(d, (B, H, T, hd)), (0, 2, 1, 3)) for d in grads]
        return xp.reshape(xp.concatenate(heads_last, axis=2), (B, T, 3 * E)), None, None, None, None


def _merge_heads(xp, o, B: int, heads: int):
    """(B·H, T, hd) -> (B, T, H·hd): each position's heads side by side."""
    _, T, hd = o.shape
    per_batch = xp.transpose(xp.reshape(o, (B, heads, T, hd)), (0, 2, 1, 3))
    return xp.reshape(xp.ascontiguousarray(per_batch), (B, T, heads * hd))
