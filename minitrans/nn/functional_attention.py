"""Scaled dot-product attention: the fused op behind ``scaled_dot_product_attention`` and the
readable composed version (``attention_reference``, ``masked_softmax``). Part of
``minitrans.nn.functional`` (import from there)."""
from __future__ import annotations

import math

import numpy as np

from .. import _dtype
from ..ops import attention as attention_ops
from ..ops import shape as shape_ops
from ..tensor import Tensor
from .functional_base import _need_float, dropout, softmax


def _attn_bias(attn_mask, xp, dtype):
    """A float additive bias (−inf where masked) from a bool (True = keep) or float mask."""
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be a Tensor, got {type(attn_mask).__name__}")
    m = attn_mask._data
    if attn_mask.dtype is _dtype.bool_:
        m = xp.where(m, dtype.type(0), dtype.type(-np.inf))
    elif attn_mask.dtype.is_floating_point:
        m = m.astype(dtype, copy=False)
    else:
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool or floating point, "
                        f"got {attn_mask.dtype}")
    return m


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 *, dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 fused: bool = True) -> Tensor:
    """softmax(query·keyᵀ·scale + mask)·value over inputs (..., T, d); one fused op with a hand-written backward.

    ``attn_mask``: bool (True = take part, as PyTorch) or float (added to the scores),
    broadcastable to (..., Tq, Tk). ``is_causal`` keeps key j for query i iff j <= i.
    A fully masked row gives zeros (and zero gradients), never NaN. The arguments after
    ``attn_mask`` are keyword-only: PyTorch orders them (dropout_p, is_causal, scale) and an
    earlier minitrans API (is_causal, dropout_p, scale); keywords make both orders safe.
    ``fused=False`` runs the readable composed version (matmul → scale → mask → softmax → matmul).
    """
    for n, t in (("query", query), ("key", key), ("value", value)):
        _need_float(t, "scaled_dot_product_attention", n)
        if t.ndim < 2:
            raise ValueError(f"scaled_dot_product_attention: {n} must be (..., T, d), got shape {tuple(t.shape)}")
    if not (query.dtype is key.dtype is value.dtype):
        raise TypeError(f"scaled_dot_product_attention: query, key and value dtypes differ: "
                        f"{query.dtype}, {key.dtype}, {value.dtype}")
    Tq, d = query.shape[-2:]
    Tk = key.shape[-2]
    if key.shape[-1] != d:
        raise ValueError(f"scaled_dot_product_attention: query {tuple(query.shape)} and key {tuple(key.shape)} "
                         "differ in the last (head) dim")
    if value.shape[-2] != Tk:
        raise ValueError(f"scaled_dot_product_attention: key {tuple(key.shape)} and value {tuple(value.shape)} "
                         "differ in sequence length")
    try:
        lead = np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: batch dims of query {tuple(query.shape)}, key "
                         f"{tuple(key.shape)} and value {tuple(value.shape)} cannot be broadcast") from None
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    xp = query.device.backend
    bias = _attn_bias(attn_mask, xp, query._data.dtype)
    full = lead + (Tq, Tk)
    if bias is not None:
        try:
            bias = xp.broadcast_to(bias, full)
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {tuple(attn_mask.shape)} does not "
                             f"broadcast to the score shape {full}") from None
    if attn_mask is not None and attn_mask.requires_grad:
        # the fused kernels treat the mask as a constant; a float mask that needs a gradient
        # (a learned bias) goes through the composed ops, which differentiate it
        return attention_reference(query, key, value, attn_mask, is_causal, scale, dropout_p)
    if not fused or dropout_p > 0.0:
        return attention_reference(query, key, value, bias, is_causal, scale, dropout_p)
    B = int(np.prod(lead, dtype=np.int64))

    def flat(t: Tensor, T: int) -> Tensor:
        if t.shape[:-2] != lead:
            t = t.expand(*lead, *t.shape[-2:])
        return t.reshape(B, T, t.shape[-1])

    q3, k3, v3 = _contig(flat(query, Tq)), _contig(flat(key, Tk)), _contig(flat(value, Tk))
    if bias is not None and len(lead) > 1 and not _merges_without_copy(bias, len(lead)) \
            and B * Tq * Tk * bias.dtype.itemsize > _MASK_COPY_LIMIT:
        # e.g. a (B, 1, 1, Tk) padding mask broadcast over heads: flattening (B, H) would copy
        # it to B·H·Tq·Tk floats. Run one fused call per index of the first batch dim instead,
        # where the mask slice (H, Tq, Tk) is still a zero-stride view.
        R = B // lead[0]
        outs = [attention_ops.ScaledDotProductAttention.apply(q3[i * R:(i + 1) * R], k3[i * R:(i + 1) * R],
                                                  v3[i * R:(i + 1) * R], bias[i].reshape(R, Tq, Tk),
                                                  bool(is_causal), scale) for i in range(lead[0])]
        o = shape_ops.Cat.apply(*outs, dim=0)
    else:
        if bias is not None and len(lead) != 1:
            bias = bias.reshape(B, Tq, Tk)
        o = attention_ops.ScaledDotProductAttention.apply(q3, k3, v3, bias, bool(is_causal), scale)
    return o.reshape(*lead, Tq, value.shape[-1])


_MASK_COPY_LIMIT = 16 << 20   # bytes of flattened mask we accept to materialise


def _merges_without_copy(a, nlead: int) -> bool:
    """True when the first ``nlead`` dims of ``a`` can be merged into one without a copy."""
    shape, strides = a.shape, getattr(a, "strides", None)
    if strides is None:
        return True
    for i in range(nlead - 1):
        if shape[i + 1] != 1 and shape[i] != 1 and strides[i] != strides[i + 1] * shape[i + 1]:
            return False
    return True


def _contig(t: Tensor) -> Tensor:
    """The kernels need C-contiguous (B, T, d) arrays; a strided view becomes a copy node."""
    return t if t._device.backend.is_contiguous(t._data) else shape_ops.Contiguous.apply(t)


def masked_softmax(scores: Tensor, bias=None, is_causal: bool = False) -> Tensor:
    """softmax over the last dim after adding ``bias`` (−inf = masked) and an optional causal mask.

    Masked scores are filled with −1e30 rather than −inf so that a row with every key masked
    yields 0/0-free arithmetic; such rows are then multiplied by 0 (they attend to nothing).
    """
    xp = scores.device.backend
    Tq, Tk = scores.shape[-2:]
    neg = None
    if bias is not None:
        b = bias._data if isinstance(bias, Tensor) else bias
        finite = xp.isfinite(b)
        if isinstance(bias, Tensor) and bias.requires_grad:   # a learnable additive mask: keep it in the graph
            scores = scores + bias.masked_fill(Tensor._wrap(~finite, scores.device), 0.0)
        else:
            scores = scores + Tensor._wrap(xp.where(finite, b, 0).astype(scores._data.dtype), scores.device)
        neg = xp.broadcast_to(~finite, scores.shape)
    if is_causal:
        causal = xp.broadcast_to(xp.arange(Tk)[None, :] > xp.arange(Tq)[:, None], scores.shape)
        neg = causal if neg is None else (neg | causal)
    if neg is None:
        return softmax(scores, dim=-1)
    scores = scores.masked_fill(Tensor._wrap(neg, scores.device), -1e30)
    alive = (~neg).any(axis=-1, keepdims=True).astype(scores._data.dtype)
    return softmax(scores, dim=-1) * Tensor._wrap(alive, scores.device)


def attention_reference(query, key, value, bias=None, is_causal=False, scale=None, dropout_p=0.0):
    """The readable composed version: matmul → scale → mask → softmax → matmul (holds the n×n matrix)."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale                      # (..., Tq, Tk)
    p = masked_softmax(scores, bias, is_causal)                            # rows sum to 1 (or 0 if dead)
    if dropout_p > 0.0:
        p = dropout(p, dropout_p)
    return p @ value
