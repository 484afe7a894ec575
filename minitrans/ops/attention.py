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
    and adds them. ``bias`` is None or an array broadcastable to (B·H, T, T) (the fused kernels' form).

    Where the backend has a kernel on the packed layout (``packed_attention_forward``: the CPU's for
    T ≤ 1,024, attention_packed.PACKED_MAX_T), no head is copied out: Q, K, V are read in place, the
    output and the (B, T, 3·E) gradient written in place, and ``qkv``, the output and the backend's
    ``state`` are saved (on the CPU the row log-sum-exp and, for short sequences, the probabilities,
    see attention_packed.py).
    Elsewhere the heads are split into (B·H, T, hd) copies for ``attention_forward`` and merged
    back, and the backward joins dQ, dK and dV into one new (B, T, 3·E) gradient.
    """

    @staticmethod
    def forward(ctx, qkv, heads, bias, is_causal, scale):
        xp = ctx.xp
        B, T, E3 = _check_packed(qkv, heads, bias)
        ctx.bias, ctx.is_causal, ctx.scale, ctx.heads = bias, is_causal, scale, heads
        fused = xp.packed_attention_forward(qkv, heads, bias, is_causal, scale)
        ctx.packed = fused is not None
        if ctx.packed:
            out, state = fused
            ctx.save_for_backward(qkv, out, state)
            return out
        q, k, v = _split_heads(xp, qkv, heads, 3)
        o, lse = xp.attention_forward(q, k, v, bias, is_causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        return _merge_heads(xp, o, B, heads)

    @staticmethod
    def backward(ctx, g):
        xp, H = ctx.xp, ctx.heads
        g = xp.ascontiguousarray(g)
        if ctx.packed:
            qkv, out, state = ctx.saved_arrays
            dqkv = xp.packed_attention_backward(qkv, out, state, g, H, ctx.bias, ctx.is_causal, ctx.scale)
            return dqkv, None, None, None, None
        q, k, v, o, lse = ctx.saved_arrays
        B, T, E = g.shape
        hd = E // H
        (do,) = _split_heads(xp, g, H, 1)
        grads = xp.attention_backward(q, k, v, o, lse, do, ctx.bias, ctx.is_causal, ctx.scale)
        # (B·H, T, hd) each, viewed as (B, T, H, hd) and joined along the packed head axis
        heads_last = [xp.transpose(xp.reshape(d, (B, H, T, hd)), (0, 2, 1, 3)) for d in grads]
        return xp.reshape(xp.concatenate(heads_last, axis=2), (B, T, 3 * E)), None, None, None, None


def _check_packed(qkv, heads: int, bias):
    """(B, T, 3·E) of a valid packed projection; the same errors on every device."""
    if len(qkv.shape) != 3 or heads < 1 or qkv.shape[2] % (3 * heads):
        raise ValueError(f"PackedSelfAttention: qkv must be (B, T, 3 * heads * head_dim), got shape "
                         f"{tuple(qkv.shape)} with heads={heads}")
    B, T, _ = qkv.shape
    if bias is not None and (len(bias.shape) != 3 or bias.shape[0] not in (1, B * heads)
                             or tuple(bias.shape[1:]) != (T, T)):
        raise ValueError(f"PackedSelfAttention: bias must be (1 or {B * heads}, {T}, {T}), got shape "
                         f"{tuple(bias.shape)}")
    return qkv.shape


def _split_heads(xp, a, heads: int, parts: int):
    """(B, T, parts·H·hd) -> ``parts`` C-contiguous (B·H, T, hd) arrays, the layout the kernels take."""
    B, T, width = a.shape
    hd = width // (parts * heads)
    pieces = xp.split_at(xp.reshape(a, (B, T, parts * heads, hd)), [heads * i for i in range(1, parts)], axis=2)
    return [xp.reshape(xp.ascontiguousarray(xp.transpose(p, (0, 2, 1, 3))), (B * heads, T, hd)) for p in pieces]


def _merge_heads(xp, o, B: int, heads: int):
    """(B·H, T, hd) -> (B, T, H·hd): each position's heads side by side."""
    _, T, hd = o.shape
    per_batch = xp.transpose(xp.reshape(o, (B, heads, T, hd)), (0, 2, 1, 3))
    return xp.reshape(xp.ascontiguousarray(per_batch), (B, T, heads * hd))
