"""Incremental decoding without autograd: a cached transformer stack run on backend arrays.

A decode step of a 4-layer model through the layers' Tensor code is ~175 autograd ops, whose
Python dispatch costs more than the arithmetic of one token. Under ``no_grad`` with dropout
inactive nothing needs a graph, so ``TransformerEncoder`` / ``TransformerDecoder`` called with
``use_cache=True`` run this instead: per layer one matmul for q, k and v of the new tokens,
their keys/values written in place into the growing cache buffers (``KVCache.append``), one
attention call that reads the cache in place (on host memory the Numba kernel of
``kernels/cpu/decode.py``; elsewhere the backend's fused kernel on a copy), and each residual
add fused with the LayerNorm that follows it. The results equal the Tensor path's (the same
arithmetic, summed in another order: within float32 rounding).

Anything unusual (hooks on a layer, an activation other than ReLU, masks other than a source
padding mask, dropout active, mismatched dtypes or shapes) makes ``plan`` return None and the
caller uses the Tensor path, which also raises the errors for bad input.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _dtype, autograd
from ..kernels.cpu import decode as host_kernels
from . import functional as F
from .attention import _as_bias
from ..tensor import Tensor
from .kv_cache import KVCache, KVStore, grown_capacity

#: steps of at most this many new tokens use the cached-attention kernel on host memory; longer
#: ones (a prompt) the backend's tiled kernel, whose matrix products beat row-by-row dot products
FEW_QUERIES = 16

#: a step of a few rows on host memory runs each layer as one kernel call (``decode_layer``)
FUSE_LAYERS = True

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))     # the dtypes the kernels are written for


def plain(module) -> bool:
    """True when array code may stand in for ``module``: no hooks on it, and its dropout off (eval
    mode or p = 0)."""
    d = module.__dict__
    return "_hooks_tables" not in d and not (d["training"] and d.get("p", 0))


def _norm(norm, E: int) -> tuple:
    """A LayerNorm's (weight, bias, eps)."""
    p = norm.__dict__["_parameters"]
    weight, bias = p.get("weight"), p.get("bias")
    if not plain(norm) or norm.normalized_shape != (E,) or weight is None or bias is None:
        raise _Unsupported
    return weight._data, bias._data, norm.eps


class _Attention:
    """A MultiheadAttention's arrays and the module itself (its cache checks and rotary)."""
    __slots__ = ("module", "heads", "head_dim", "w_in", "b_in", "w_out", "b_out", "rotary", "weight")

    def __init__(self, attn, E: int) -> None:
        d = attn.__dict__
        p, out = d["_parameters"], d["_modules"]["out_proj"]
        if not (plain(attn) and plain(out) and d["batch_first"] and d["embed_dim"] == E
                and not (d["training"] and d["dropout"])):
            raise _Unsupported
        op = out.__dict__["_parameters"]
        w = p["in_proj_weight"]
        self.module, self.heads, self.head_dim, self.rotary = attn, d["num_heads"], d["head_dim"], d["_modules"].get(
            "rotary")
        self.w_in, self.b_in = w._data, _array(p.get("in_proj_bias"))
        self.w_out, self.b_out = op["weight"]._data, _array(op.get("bias"))
        self.weight = w                                   # its dtype and device, when they are needed


class _Layer:
    """One encoder or decoder layer: pre- or post-LN, its norms, attentions and feed-forward arrays."""
    __slots__ = ("pre", "norms", "self_attn", "cross_attn", "w1", "b1", "w2", "b2")

    def __init__(self, layer, E: int, decoder: bool) -> None:
        d = layer.__dict__
        mods = d["_modules"]
        drops = ("dropout", "dropout1", "dropout2") + (("dropout3",) if decoder else ())
        if not (plain(layer) and d.get("activation") is F.relu and all(plain(mods[n]) for n in drops)):
            raise _Unsupported
        self.pre = d["norm_first"]
        self.norms = [_norm(mods[n], E) for n in (("norm1", "norm2", "norm3") if decoder else ("norm1", "norm2"))]
        self.self_attn = _Attention(mods["self_attn"], E)
        self.cross_attn = _Attention(mods["multihead_attn"], E) if decoder else None
        l1, l2 = mods["linear1"], mods["linear2"]
        if not (plain(l1) and plain(l2)):
            raise _Unsupported
        p1, p2 = l1.__dict__["_parameters"], l2.__dict__["_parameters"]
        self.w1, self.b1, self.w2, self.b2 = p1["weight"]._data, _array(p1.get("bias")), p2["weight"]._data, \
            _array(p2.get("bias"))


class _Unsupported(Exception):
    """Raised while reading a stack that this path does not cover."""


def _array(p):
    return None if p is None else p._data


def plan(stack, x, decoder: bool):
    """The arrays of ``stack`` (a TransformerEncoder/Decoder) for a step on input ``x``, or None when
    this path does not apply (gradients on, hooks, dropout active, another activation, ...)."""
    if autograd.is_grad_enabled() or x.ndim != 3 or not plain(stack):
        return None
    E = x.shape[-1]
    mods = stack.__dict__["_modules"]
    try:
        layers = [_Layer(la, E, decoder) for la in mods["layers"].__dict__["_modules"].values()]
        norm = mods.get("norm")
        final = None if norm is None else _norm(norm, E)
    except _Unsupported:
        return None
    if not layers or x._data.dtype != layers[0].w1.dtype or x._data.dtype not in _FLOATS:
        return None
    return layers, final, x.device


def memory_ok(memory, pad, tgt) -> bool:
    """The encoder memory (B, S, E) and its padding mask (B, S) fit the target ``tgt`` (B, T, E)."""
    return (isinstance(memory, Tensor) and memory.ndim == 3 and memory.shape[0] == tgt.shape[0]
            and memory.shape[2] == tgt.shape[2] and memory.dtype is tgt.dtype and memory.device == tgt.device
            and (pad is None or (isinstance(pad, Tensor) and pad.shape == memory.shape[:2]
                                 and pad.device == tgt.device)))


# ----------------------------------------------------------------------------- array pieces
def linear(matmul, x, weight, bias):
    """x (..., in) @ weightᵀ + bias on backend arrays (weight (out, in) as a Linear stores it), by
    ``matmul`` (``matmul_for``)."""
    y = matmul(x.reshape(-1, x.shape[-1]), weight.T)
    if bias is not None:
        y += bias
    return y.reshape(x.shape[:-1] + (weight.shape[0],))


def embedding_rows(embedding, idx):
    """embedding(idx) for int64 ids (B, T); under ``no_grad`` the rows are gathered on arrays after
    the same index check (the Tensor path otherwise, which also raises for bad ids)."""
    w = embedding.__dict__["_parameters"]["weight"]
    if (autograd.is_grad_enabled() or not plain(embedding) or not isinstance(idx, Tensor)
            or idx.dtype is not _dtype.int64 or idx.device != w.device):
        return embedding(idx)
    idx.device.backend.check_index_range(idx._data, w.shape[0], "embedding")
    return Tensor._wrap(w._data[idx._data], idx.device)


def output_head(head, h):
    """head(h) for a Linear ``head`` on the Tensor h (B, T, in), on arrays under ``no_grad``
    (None when the Tensor path must run: gradients on, hooks)."""
    if autograd.is_grad_enabled() or not plain(head) or h.ndim != 3 or h.dtype is not head.weight.dtype:
        return None
    xp = h.device.backend
    p = head.__dict__["_parameters"]
    y = linear(matmul_for(xp, h.shape[0] * h.shape[1]), h._data, p["weight"]._data, _array(p.get("bias")))
    return Tensor._wrap(y, h.device)


def matmul_for(xp, rows: int):
    """The backend's matmul, or NumPy's for a few rows on host memory: products of a decode step are
    far below the size where the backend splits them over threads, so skip its dispatch."""
    return np.matmul if xp.host_memory and rows <= FEW_QUERIES else xp.matmul


def _add_norm(xp, x, delta, norm: tuple):
    """x += delta (in place; None adds nothing), then norm(x) for ``norm`` = (weight, bias, eps):
    the residual add and the LayerNorm after it in one pass on host memory."""
    w, b, eps = norm
    if xp.host_memory:                       # the Numba kernel reads host arrays
        return host_kernels.add_layer_norm(x, delta, w, b, eps)
    if delta is not None:
        x += delta
    return xp.layer_norm_forward(x.reshape(-1, x.shape[-1]), w, b, eps)[0].reshape(x.shape)


def _attend(xp, q, cache: KVCache, past: int, causal: bool, key_bias, scale: float):
    """q (B, T, H, hd) against the cache's rows; query t sits at position past + t. -> (B, T, H·hd)."""
    B, T, H, hd = q.shape
    store, L = cache.store, cache.length
    if xp.host_memory and T <= FEW_QUERIES:   # the Numba kernel reads the buffers in place
        o = host_kernels.cached_attention(q, store.key, store.value, L, past, causal, key_bias, scale)
        return o.reshape(B, T, H * hd)

    def heads(a, n):                          # (B, H, n, hd) view -> contiguous (B·H, n, hd)
        return xp.ascontiguousarray(a).reshape(B * H, n, hd)

    qh = heads(xp.transpose(q, (0, 2, 1, 3)), T)
    kh, vh = heads(store.key[:, :, :L], L), heads(store.value[:, :, :L], L)
    whole = causal and past == 0 and T == L    # the plain causal square: the kernel's own mask
    bias = None
    if causal and not whole:                    # query t may see keys 0 .. past + t
        bias = xp.asarray(np.triu(np.full((T, L), -np.inf, q.dtype), k=past + 1))
    if key_bias is not None:
        kb = key_bias.reshape(B, 1, 1, L)
        bias = kb if bias is None else kb + bias
    if bias is not None:
        bias = xp.ascontiguousarray(xp.broadcast_to(bias, (B, H, T, L))).reshape(B * H, T, L)
    o, _ = xp.attention_forward(qh, kh, vh, bias, whole, scale)
    return xp.ascontiguousarray(xp.transpose(o.reshape(B, H, T, hd), (0, 2, 1, 3))).reshape(B, T, H * hd)


def _self_attention(xp, matmul, attn: _Attention, a, past, causal: bool):
    """Causal (or not) self-attention of the new tokens a (B, T, E) over the cache and themselves."""
    B, T, E = a.shape
    H, hd = attn.heads, attn.head_dim
    past = attn.module._check_past(past, B, False)
    P = 0 if past is None else past.length
    qkv = linear(matmul, a, attn.w_in, attn.b_in).reshape(B, T, 3, H, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                  # (B, T, H, hd) views
    if attn.rotary is not None:
        w = attn.weight
        q, k = (attn.rotary.rotate_rows(t, P, w.dtype, w.device) for t in (q, k))
    if past is None:
        store = KVStore(*(xp.empty((B, H, grown_capacity(T), hd), qkv.dtype) for _ in range(2)), 0)
        past = KVCache.of_store(store, 0, attn.module, False, attn.weight.device)
    cache = past.append(k, v)
    o = _attend(xp, q, cache, P, causal, None, 1.0 / math.sqrt(hd))
    return linear(matmul, o, attn.w_out, attn.b_out), cache


def _cross_attention(xp, matmul, attn: _Attention, a, memory, past, key_bias):
    """Attention of a (B, T, E) over the encoder memory, whose keys/values the cache holds after
    the first call (computed from ``memory`` then, one matmul for both)."""
    B, T, E = a.shape
    H, hd = attn.heads, attn.head_dim
    W, b = attn.w_in, attn.b_in
    past = _cross_cache(xp, attn, memory, attn.module._check_past(past, B, True))
    q = linear(matmul, a, W[:E], None if b is None else b[:E]).reshape(B, T, H, hd)
    o = _attend(xp, q, past, 0, False, key_bias, 1.0 / math.sqrt(hd))
    return linear(matmul, o, attn.w_out, attn.b_out), past


def _cross_cache(xp, attn: _Attention, memory, past):
    """``past``, or on the first step the cache of the memory's keys and values (one matmul)."""
    if past is not None:
        return past
    B, S, E = memory.shape
    H, hd, b = attn.heads, attn.head_dim, attn.b_in
    kv = linear(xp.matmul, memory, attn.w_in[E:], None if b is None else b[E:]).reshape(B, S, 2, H, hd)
    store = KVStore(*(xp.empty((B, H, S, hd), kv.dtype) for _ in range(2)), 0)
    return KVCache.of_store(store, 0, attn.module, True, attn.weight.device).append(kv[:, :, 0], kv[:, :, 1])


def _feed_forward(xp, matmul, layer: _Layer, a):
    h = linear(matmul, a, layer.w1, layer.b1)
    return linear(matmul, xp.maximum(h, h.dtype.type(0)), layer.w2, layer.b2)


def _fusable(layer: _Layer) -> bool:
    """Every projection has a bias (the one-call layer kernel is written for that case)."""
    attns = (layer.self_attn,) if layer.cross_attn is None else (layer.self_attn, layer.cross_attn)
    return (layer.b1 is not None and layer.b2 is not None
            and all(a.b_in is not None and a.b_out is not None for a in attns))


def _fused_layer(xp, layer: _Layer, x, self_past, cross_past, causal: bool, memory, key_bias):
    """The whole layer in one call of the host kernel ``decode_layer`` (x updated in place);
    returns the new (self, cross) caches."""
    B, T, E = x.shape
    attn, cross_attn = layer.self_attn, layer.cross_attn
    self_past = attn.module._check_past(self_past, B, False)
    if self_past is None:
        shape = (B, attn.heads, grown_capacity(T), attn.head_dim)
        store = KVStore(xp.empty(shape, x.dtype), xp.empty(shape, x.dtype), 0)
        self_past = KVCache.of_store(store, 0, attn.module, False, attn.weight.device)
    P = self_past.length
    cache = self_past.extend(T)
    tables = None
    if attn.rotary is not None:
        cos, sin = attn.rotary.tables(P, T, attn.weight.dtype, attn.weight.device)
        tables = (cos._data, sin._data)
    cross = None
    if cross_attn is not None:
        cross_past = _cross_cache(xp, cross_attn, memory, cross_attn.module._check_past(cross_past, B, True))
        cross = (cross_attn.w_in[:E], cross_attn.b_in[:E], cross_attn.w_out, cross_attn.b_out,
                 cross_past.store.key, cross_past.store.value, cross_past.length, key_bias)
    host_kernels.decode_layer(x.reshape(B * T, E), B, attn.heads, layer.pre, layer.norms[0][2], layer.norms,
                              (attn.w_in, attn.b_in, attn.w_out, attn.b_out), (cache.store.key, cache.store.value),
                              P, causal, tables, cross, (layer.w1, layer.b1, layer.w2, layer.b2))
    return cache, cross_past


# ----------------------------------------------------------------------------- stacks
def run_stack(stack_plan, x, slots: list, causal: bool, memory=None, memory_pad=None):
    """The layers and final norm of ``stack_plan`` (from ``plan``) on x (B, T, E) (a backend array
    this call may overwrite). Encoder layers when ``memory`` is None, else decoder layers
    attending to ``memory`` (B, S, E) with the source padding mask ``memory_pad`` (B, S)
    (True = padding). ``slots``: per layer {"self": cache or None} (encoder) or {"self": ...,
    "cross": ...} (decoder). Returns (output array, the new caches: one per layer, or a
    (self, cross) pair per layer)."""
    layers, final, device = stack_plan
    xp = device.backend
    matmul = matmul_for(xp, x.shape[0] * x.shape[1])
    decoder = memory is not None
    key_bias = _as_bias(memory_pad, x.dtype, "memory_key_padding_mask") if decoder else None
    pending, presents = None, []                # pre-LN: the sublayer output not yet added to x
    fuse = FUSE_LAYERS and xp.host_memory and x.shape[0] * x.shape[1] <= FEW_QUERIES
    for layer, slot in zip(layers, slots):
        pre, norms = layer.pre, layer.norms
        if (fuse or not pre) and pending is not None:     # the layer adds its input's residual itself
            x += pending
            pending = None
        if fuse and _fusable(layer):
            presents.append(_fused_layer(xp, layer, x, slot["self"], slot.get("cross"), causal, memory, key_bias))
            if not decoder:
                presents[-1] = presents[-1][0]
            continue
        a = _add_norm(xp, x, pending, norms[0]) if pre else x
        out, sa_cache = _self_attention(xp, matmul, layer.self_attn, a, slot["self"], causal)
        x, pending = (x, out) if pre else (_add_norm(xp, x, out, norms[0]), None)
        if decoder:
            a = _add_norm(xp, x, pending, norms[1]) if pre else x
            out, ca_cache = _cross_attention(xp, matmul, layer.cross_attn, a, memory, slot["cross"], key_bias)
            x, pending = (x, out) if pre else (_add_norm(xp, x, out, norms[1]), None)
        a = _add_norm(xp, x, pending, norms[-1]) if pre else x
        out = _feed_forward(xp, matmul, layer, a)
        x, pending = (x, out) if pre else (_add_norm(xp, x, out, norms[-1]), None)
        presents.append((sa_cache, ca_cache) if decoder else sa_cache)
    if final is not None:
        x = _add_norm(xp, x, pending, final)
    elif pending is not None:
        x += pending
    return x, presents
