"""MultiheadAttention: Q/K/V projections split into heads, one fused attention, an output projection."""
from __future__ import annotations

import numpy as np

from .. import _dtype
from ..tensor import Tensor, zeros
from . import functional as F
from . import init
from .layers import Linear
from .module import Module, Parameter


def _as_bias(mask: Tensor | None, dtype, name: str):
    """PyTorch MHA masks (bool: True = NOT allowed; float: added) as a float additive array."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"MultiheadAttention: {name} must be a Tensor, got {type(mask).__name__}")
    xp = mask.device.backend
    if mask.dtype is _dtype.bool_:
        return xp.where(mask._data, dtype.type(-np.inf), dtype.type(0))
    if mask.dtype.is_floating_point:
        return mask._data.astype(dtype, copy=False)
    raise TypeError(f"MultiheadAttention: {name} must be bool or float, got {mask.dtype}")


class MultiheadAttention(Module):
    """Multi-head attention as ``torch.nn.MultiheadAttention`` (same parameters and state-dict keys).

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (output, weights or None). Masks follow
    PyTorch's MHA convention: a bool mask marks positions that may NOT be attended to.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, dtype=None) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = Parameter(zeros(3 * embed_dim, embed_dim, dtype=dtype))
        self.in_proj_bias = Parameter(zeros(3 * embed_dim, dtype=dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        init.xavier_uniform_(self.in_proj_weight)
        if bias:
            init.zeros_(self.out_proj.bias)

    def _project(self, query: Tensor, key: Tensor, value: Tensor):
        W, b, E = self.in_proj_weight, self.in_proj_bias, self.embed_dim
        if query is key and key is value:  # self-attention: one GEMM for Q, K and V
            return F.linear(query, W, b).chunk(3, dim=-1)
        bs = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        return (F.linear(query, W[:E], bs[0]), F.linear(key, W[E:2 * E], bs[1]),
                F.linear(value, W[2 * E:], bs[2]))

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False):
        for n, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor) or t.ndim != 3 or t.shape[-1] != self.embed_dim:
                raise ValueError(f"MultiheadAttention(embed_dim={self.embed_dim}) expects 3-D {n} "
                                 f"(batch, seq, {self.embed_dim}) got shape "
                                 f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value)) if not (
                query is key is value) else (query.transpose(0, 1),) * 3
        B, Tq, E = query.shape                                   # (batch, target length, embed)
        Tk = key.shape[1]
        if key.shape[0] != B or value.shape[:2] != key.shape[:2]:
            raise ValueError(f"MultiheadAttention: query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                             f"{tuple(value.shape)} must share batch size, and key/value their length")
        H, hd = self.num_heads, self.head_dim
        q, k, v = self._project(query, key, value)
        q = q.reshape(B, Tq, H, hd).transpose(1, 2)             # (B, H, Tq, hd)
        k = k.reshape(B, Tk, H, hd).transpose(1, 2)             # (B, H, Tk, hd)
        v = v.reshape(B, Tk, H, hd).transpose(1, 2)
        bias = self._bias(attn_mask, key_padding_mask, B, Tq, Tk, query)
        p_drop = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            out, weights = self._with_weights(q, k, v, bias, is_causal, p_drop)
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            # is_causal and a mask may come together (a causal attn_mask is then applied twice: harmless)
            out = F.scaled_dot_product_attention(q, k, v, bias, dropout_p=p_drop, is_causal=is_causal)
        out = self.out_proj(out.transpose(1, 2).reshape(B, Tq, E))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _bias(self, attn_mask, key_padding_mask, B, Tq, Tk, ref: Tensor):
        dt = ref._data.dtype
        bias = None
        m = _as_bias(attn_mask, dt, "attn_mask")
        if m is not None:
            if m.shape == (Tq, Tk):
                m = m.reshape(1, 1, Tq, Tk)
            elif m.shape == (B * self.num_heads, Tq, Tk):
                m = m.reshape(B, self.num_heads, Tq, Tk)
            else:
                raise ValueError(f"MultiheadAttention: attn_mask must be ({Tq}, {Tk}) or "
                                 f"({B * self.num_heads}, {Tq}, {Tk}), got {tuple(attn_mask.shape)}")
            bias = Tensor._wrap(m, ref.device)
            if attn_mask.requires_grad:  # a learned float bias: keep it in the graph (as PyTorch does)
                bias = (attn_mask if attn_mask.dtype is ref.dtype else attn_mask.astype(ref.dtype)).reshape(*m.shape)
        kp = _as_bias(key_padding_mask, dt, "key_padding_mask")
        if kp is not None:
            if kp.shape != (B, Tk):
                raise ValueError(f"MultiheadAttention: key_padding_mask must be ({B}, {Tk}), got {tuple(kp.shape)}")
            kp = Tensor._wrap(kp.reshape(B, 1, 1, Tk), ref.device)
            bias = kp if bias is None else bias + kp
        return bias

    @staticmethod
    def _with_weights(q, k, v, bias, is_causal, p_drop):
        """The composed path, when the caller wants the attention weights back."""
        scores = (q @ k.transpose(-2, -1)) * (1.0 / np.sqrt(q.shape[-1]))
        out_w = F.masked_softmax(scores, bias, is_causal)
        p = F.dropout(out_w, p_drop) if p_drop else out_w
        return p @ v, out_w

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"

