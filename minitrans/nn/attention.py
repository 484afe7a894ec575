"""MultiheadAttention: Q/K/V projections split into heads, one fused attention, an output projection."""
from __future__ import annotations

import numpy as np

from .. import _dtype
from .._functions import cat
from ..ops import attention as attention_ops
from ..tensor import Tensor, tensor, zeros
from . import functional as F
from . import init
from .kv_cache import KVCache
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

    Incremental decoding (not in PyTorch's module): ``use_cache=True`` returns a third item,
    a ``KVCache`` holding this call's keys and values (B, H, L, head_dim); pass it back as
    ``past_key_value`` with the next token(s) and their keys/values are appended, so a step
    costs O(L) instead of recomputing O(L²). ``static_kv=True`` (cross-attention) computes
    the keys/values from ``key``/``value`` once and reuses them from the cache afterwards.
    Masks then cover every cached key: attn_mask (Tq, L), key_padding_mask (B, L); ``is_causal``
    lets query i (absolute position past + i) see keys up to that position. ``rotary`` (a
    ``RotaryEmbedding`` or None) rotates queries and keys by their absolute positions.
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
        self.rotary = None                  # a RotaryEmbedding(head_dim) to rotate q and k by position

    def _project(self, query: Tensor, key: Tensor, value: Tensor):
        W, b, E = self.in_proj_weight, self.in_proj_bias, self.embed_dim
        if query is key and key is value:  # self-attention: one GEMM for Q, K and V
            return F.linear(query, W, b).chunk(3, dim=-1)
        bs = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        return (F.linear(query, W[:E], bs[0]), F.linear(key, W[E:2 * E], bs[1]),
                F.linear(value, W[2 * E:], bs[2]))

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False, *, past_key_value: KVCache | None = None, use_cache: bool = False,
                static_kv: bool = False):
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
        past = self._check_past(past_key_value, B, static_kv)
        p_drop = self.dropout if self.training else 0.0
        if past is None and not (use_cache or need_weights or p_drop or key_padding_mask is not None) \
                and query is key is value and self.rotary is None:
            out = self._packed_self_attention(query, attn_mask, is_causal)
            if out is not None:
                out = self.out_proj(out)
                return (out if self.batch_first else out.transpose(0, 1)), None
        P = 0 if past is None or static_kv else past.length      # positions already in the cache
        if past is not None and static_kv:                         # cross-attention: K/V made once
            q = F.linear(query, self.in_proj_weight[:E], None if self.in_proj_bias is None else self.in_proj_bias[:E])
            k, v = past.key, past.value
        else:
            q, k, v = self._project(query, key, value)
            k = k.reshape(B, Tk, H, hd).transpose(1, 2)         # (B, H, Tk, hd)
            v = v.reshape(B, Tk, H, hd).transpose(1, 2)
        q = q.reshape(B, Tq, H, hd).transpose(1, 2)             # (B, H, Tq, hd)
        if self.rotary is not None and not static_kv:
            q, k = self.rotary(q, P), self.rotary(k, P)
        if use_cache and not (past is not None and static_kv):
            # stored C-contiguous (B, H, L, hd): the fused kernel then reads the cache in place, and
            # appending to it keeps it contiguous (the projections' head split is a strided view)
            k, v = k.contiguous(), v.contiguous()
        if past is not None and not static_kv:
            k, v = cat([past.key, k], dim=2), cat([past.value, v], dim=2)   # (B, H, P + Tk, hd)
        present = KVCache(k, v, self, static_kv) if use_cache else None
        Tk = k.shape[2]
        bias = self._bias(attn_mask, key_padding_mask, B, Tq, Tk, query)
        if is_causal and P:
            # query i sits at absolute position P + i: it may see keys 0 .. P + i (bottom-right causal)
            if Tq > 1:
                lim = np.triu(np.full((Tq, Tk), -np.inf, query._data.dtype), k=P + 1).reshape(1, 1, Tq, Tk)
                lim = tensor(lim, device=query.device)
                bias = lim if bias is None else bias + lim
            is_causal = False                                   # one query row: every cached key is visible
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
        return (out, weights, present) if use_cache else (out, weights)

    def _packed_self_attention(self, x: Tensor, attn_mask, is_causal: bool):
        """Self-attention of x (B, T, E) as one op on the packed Q/K/V projection (see
        ``PackedSelfAttention``), before the output projection; None where it does not apply
        (a mask that needs a gradient or one per batch item, a non-float input)."""
        if not x.dtype.is_floating_point or (attn_mask is not None and attn_mask.requires_grad):
            return None
        B, T, _ = x.shape
        H = self.num_heads
        bias = self._bias(attn_mask, None, B, T, T, x)
        if bias is not None:
            m = bias._data
            if m.shape[:2] == (1, 1):
                m = x.device.backend.broadcast_to(m.reshape(1, T, T), (B * H, T, T))
            elif m.shape[:2] == (B, H):
                m = m.reshape(B * H, T, T)
            else:
                return None
            bias = m
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        scale = 1.0 / float(np.sqrt(self.head_dim))
        return attention_ops.PackedSelfAttention.apply(qkv, H, bias, bool(is_causal), scale)

    def _check_past(self, past, B: int, static_kv: bool):
        if past is None:
            return None
        if not isinstance(past, KVCache):
            raise TypeError(f"MultiheadAttention: past_key_value must be a KVCache (from a call with "
                            f"use_cache=True), got {type(past).__name__}")
        if past.owner is not self:
            raise ValueError("MultiheadAttention: past_key_value was made by another attention module (a cache "
                             "from another model or layer); pass the cache this module returned")
        if past.static != static_kv:
            kind = "fixed cross-attention" if past.static else "growing self-attention"
            raise ValueError(f"MultiheadAttention: the cache holds {kind} keys/values but static_kv={static_kv}")
        if past.batch_size != B:
            raise ValueError(f"MultiheadAttention: the cache holds a batch of {past.batch_size}, the query has {B}")
        return past

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

