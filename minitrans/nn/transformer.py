"""Positional encoding, feed-forward, encoder/decoder layers and the encoder–decoder Transformer.

Layers mirror ``torch.nn.Transformer*``: argument names, order and defaults (post-LayerNorm,
``norm_first=False``), state-dict keys. Pre-LN, which trains stably without a careful
warm-up, is one argument away: ``norm_first=True``.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from .. import autograd
from ..ops import linalg as linalg_ops
from ..tensor import Tensor
from . import functional as F
from . import init
from . import incremental
from .attention import MultiheadAttention
from .layers import Dropout, LayerNorm, Linear, ModuleList
from .module import Module


def _activation(name):
    if callable(name):
        return name
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {name!r}")


class PositionalEncoding(Module):
    """x + PE[:T], PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d)); then dropout."""

    def __init__(self, d_model: int, dropout: float = 0.0, max_len: int = 5000, batch_first: bool = True) -> None:
        super().__init__()
        pos = np.arange(max_len)[:, None]
        div = np.exp(np.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = np.zeros((max_len, d_model), np.float32)
        pe[:, 0::2] = np.sin(pos * div)
        pe[:, 1::2] = np.cos(pos * div)[:, : d_model // 2]
        self.register_buffer("pe", Tensor._wrap(pe), persistent=False)
        self.dropout = Dropout(dropout)
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """``offset``: the position of x's first step (incremental decoding feeds one step at a time)."""
        T = x.shape[1] if self.batch_first else x.shape[0]
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"PositionalEncoding(d_model={self.d_model}) got input of shape {tuple(x.shape)}")
        if offset + T > self.max_len:
            raise ValueError(f"PositionalEncoding: sequence length {offset + T} exceeds max_len={self.max_len}")
        if not autograd.is_grad_enabled() and self.batch_first and incremental.plain(self.dropout):
            # inference: the same sum on arrays, without a graph
            return Tensor._wrap(x._data + self.pe._data[offset:offset + T].astype(x._data.dtype, copy=False),
                                x.device)
        pe = self.pe[offset:offset + T].astype(x.dtype)                # (T, d)
        return self.dropout(x + (pe if self.batch_first else pe.unsqueeze(1)))


def feed_forward(x: Tensor, linear1: Linear, linear2: Linear, activation, dropout: Dropout) -> Tensor:
    """linear2(dropout(activation(linear1(x)))): the position-wise feed-forward block.

    With ReLU and the dropout inactive, ``linear1`` and the ReLU run as one op (``LinearRelu``: the
    bias and max(., 0) applied inside the product's blocks; in backward, one pass masks the gradient
    and sums it for the bias), with the same values. Only where nothing can tell the difference:
    a plain ``Linear`` and ``Dropout`` without hooks, and an input the layer accepts as it is (any
    other input takes the unfused path, which raises the layer's own errors)."""
    if activation is F.relu and _fusable(x, linear1) and type(dropout) is Dropout and incremental.plain(dropout):
        return linear2(linalg_ops.LinearRelu.apply(x, linear1.weight, linear1.bias))
    return linear2(dropout(activation(linear1(x))))


def _fusable(x, linear: Linear) -> bool:
    """True when ``linear(x)`` is exactly the plain product: a hook-free ``Linear``, and ``x`` a
    tensor of its weight's dtype and device with the right last dim."""
    w, b = linear.weight, linear.bias
    return type(linear) is Linear and incremental.plain(linear) and isinstance(x, Tensor) and x.ndim > 0 \
        and x.shape[-1] == w.shape[1] and x.dtype is w.dtype and x.device == w.device \
        and (b is None or b.dtype is w.dtype and b.device == w.device)


class FeedForward(Module):
    """The position-wise feed-forward network d_model → d_ff → d_model."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float = 0.0, activation="relu") -> None:
        super().__init__()
        self.linear1, self.linear2 = Linear(d_model, dim_feedforward), Linear(dim_feedforward, d_model)
        self.dropout = Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return feed_forward(x, self.linear1, self.linear2, self.activation, self.dropout)


def _cache_slots(past, use_cache: bool, names: tuple):
    """{name: KVCache or None} the attention calls read and replace, or None when not caching."""
    if not use_cache:
        if past is not None:
            raise ValueError("past_key_value was given without use_cache=True")
        return None
    if past is None:
        return dict.fromkeys(names)
    past = (past,) if len(names) == 1 else tuple(past)
    if len(past) != len(names):
        raise ValueError(f"past_key_value must hold {len(names)} caches ({', '.join(names)}), got {len(past)}")
    return dict(zip(names, past))


def _attend(attn: MultiheadAttention, x, mem, mask, kpm, is_causal, cache, slot: str) -> Tensor:
    """attn(x, mem, mem) without weights; with ``cache`` it reads and replaces ``cache[slot]``."""
    if cache is None:
        return attn(x, mem, mem, attn_mask=mask, key_padding_mask=kpm, need_weights=False, is_causal=is_causal)[0]
    out, _, cache[slot] = attn(x, mem, mem, attn_mask=mask, key_padding_mask=kpm, need_weights=False,
                               is_causal=is_causal, past_key_value=cache[slot], use_cache=True,
                               static_kv=slot == "cross")
    return out


def _build_sublayers(layer: Module, decoder: bool, d_model, nhead, dim_feedforward, dropout, activation,
                     layer_norm_eps, batch_first, norm_first, bias) -> None:
    """The members of an encoder layer (self-attention, feed-forward) or a decoder layer (plus
    cross-attention ``multihead_attn`` and a third norm and dropout), under PyTorch's names and
    in its registration order (so state dicts and the random initialisation match)."""
    def attention():
        return MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first)

    layer.self_attn = attention()
    if decoder:
        layer.multihead_attn = attention()
    layer.linear1, layer.linear2 = Linear(d_model, dim_feedforward, bias), Linear(dim_feedforward, d_model, bias)
    layer.dropout = Dropout(dropout)
    layer.norm1, layer.norm2 = LayerNorm(d_model, layer_norm_eps), LayerNorm(d_model, layer_norm_eps)
    if decoder:
        layer.norm3 = LayerNorm(d_model, layer_norm_eps)
    layer.dropout1, layer.dropout2 = Dropout(dropout), Dropout(dropout)
    if decoder:
        layer.dropout3 = Dropout(dropout)
    layer.activation = _activation(activation)
    layer.norm_first = norm_first


class TransformerEncoderLayer(Module):
    """Self-attention and feed-forward blocks, each with a residual; post-LN unless ``norm_first``."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True) -> None:
        super().__init__()
        _build_sublayers(self, False, d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                         batch_first, norm_first, bias)

    def _sa(self, x, attn_mask, key_padding_mask, is_causal, cache=None):
        x = _attend(self.self_attn, x, x, attn_mask, key_padding_mask, is_causal, cache, "self")
        return self.dropout1(x)

    def _ff(self, x):
        return self.dropout2(feed_forward(x, self.linear1, self.linear2, self.activation, self.dropout))

    def forward(self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool = False, *, past_key_value=None, use_cache: bool = False):
        """``use_cache=True`` returns (output, KVCache of the self-attention); pass it back as
        ``past_key_value`` with the next step (a causal decoder-only stack decodes this way)."""
        x, cache = src, _cache_slots(past_key_value, use_cache, ("self",))
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal, cache)
            x = x + self._ff(self.norm2(x))
        else:
            x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal, cache))
            x = self.norm2(x + self._ff(x))
        return x if cache is None else (x, cache["self"])


class TransformerDecoderLayer(Module):
    """Masked self-attention, cross-attention over the encoder memory, feed-forward; post-LN unless ``norm_first``."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True) -> None:
        super().__init__()
        _build_sublayers(self, True, d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                         batch_first, norm_first, bias)

    def _sa(self, x, mask, kpm, is_causal, cache=None):
        return self.dropout1(_attend(self.self_attn, x, x, mask, kpm, is_causal, cache, "self"))

    def _mha(self, x, mem, mask, kpm, is_causal, cache=None):
        return self.dropout2(_attend(self.multihead_attn, x, mem, mask, kpm, is_causal, cache, "cross"))

    def _ff(self, x):
        return self.dropout3(feed_forward(x, self.linear1, self.linear2, self.activation, self.dropout))

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False, memory_is_causal: bool = False, *,
                past_key_value=None, use_cache: bool = False):
        """``use_cache=True`` returns (output, (self-attention KVCache, cross-attention KVCache)):
        self-attention keys/values grow by the new steps, cross-attention ones are made from
        ``memory`` on the first call and reused after. Pass the pair back as ``past_key_value``."""
        x, cache = tgt, _cache_slots(past_key_value, use_cache, ("self", "cross"))
        if self.norm_first:
            x = x + self._sa(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal, cache)
            x = x + self._mha(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal, cache)
            x = x + self._ff(self.norm3(x))
        else:
            x = self.norm1(x + self._sa(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal, cache))
            x = self.norm2(x + self._mha(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal, cache))
            x = self.norm3(x + self._ff(x))
        return x if cache is None else (x, (cache["self"], cache["cross"]))


def _layer_pasts(pasts, use_cache: bool, n: int) -> list:
    if pasts is None:
        return [None] * n
    if not use_cache:
        raise ValueError("past_key_values was given without use_cache=True")
    pasts = list(pasts)
    if len(pasts) != n:
        raise ValueError(f"past_key_values holds caches for {len(pasts)} layers, this stack has {n}")
    return pasts


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` and an optional final norm."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        # enable_nested_tensor and mask_check select PyTorch's inference fast path; accepted for
        # compatibility, they change nothing here (there is one path, and its results are the same)
        super().__init__()
        self.layers = ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers, self.norm = num_layers, norm

    def forward(self, src: Tensor, mask=None, src_key_padding_mask=None, is_causal: bool = False, *,
                past_key_values=None, use_cache: bool = False):
        """``use_cache=True`` returns (output, [one KVCache per layer]); under ``no_grad`` with
        dropout inactive that runs on arrays, without autograd (``minitrans.nn.incremental``)."""
        x, pasts, presents = src, _layer_pasts(past_key_values, use_cache, len(self.layers)), []
        fast = incremental.plan(self, src, False) if use_cache and mask is None and src_key_padding_mask is None \
            else None
        if fast is not None:
            slots = [_cache_slots(p, True, ("self",)) for p in pasts]
            y, presents = incremental.run_stack(fast, src._data.copy(), slots, bool(is_causal))
            return Tensor._wrap(y, src.device), presents
        for layer, past in zip(self.layers, pasts):
            r = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal,
                      past_key_value=past, use_cache=use_cache)
            x = r[0] if use_cache else r
            presents.append(r[1] if use_cache else None)
        x = x if self.norm is None else self.norm(x)
        return (x, presents) if use_cache else x


class TransformerDecoder(Module):
    """``num_layers`` copies of ``decoder_layer`` and an optional final norm."""

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None) -> None:
        super().__init__()
        self.layers = ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers, self.norm = num_layers, norm

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False, memory_is_causal: bool = False, *,
                past_key_values=None, use_cache: bool = False):
        """``use_cache=True`` returns (output, [one (self, cross) KVCache pair per layer]); under
        ``no_grad`` with dropout inactive that runs on arrays (``minitrans.nn.incremental``)."""
        x, pasts, presents = tgt, _layer_pasts(past_key_values, use_cache, len(self.layers)), []
        fast = incremental.plan(self, tgt, True) if (
            use_cache and tgt_mask is None and memory_mask is None and tgt_key_padding_mask is None
            and not memory_is_causal and incremental.memory_ok(memory, memory_key_padding_mask, tgt)) else None
        if fast is not None:
            slots = [_cache_slots(p, True, ("self", "cross")) for p in pasts]
            y, presents = incremental.run_stack(fast, tgt._data.copy(), slots, bool(tgt_is_causal), memory._data,
                                                memory_key_padding_mask)
            return Tensor._wrap(y, tgt.device), presents
        for layer, past in zip(self.layers, pasts):
            r = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal,
                      past_key_value=past, use_cache=use_cache)
            x = r[0] if use_cache else r
            presents.append(r[1] if use_cache else None)
        x = x if self.norm is None else self.norm(x)
        return (x, presents) if use_cache else x


class Transformer(Module):
    """The encoder–decoder of "Attention Is All You Need"; weights with >1 dim get Xavier-uniform init."""

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True) -> None:
        super().__init__()
        enc = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                      batch_first, norm_first, bias)
        dec = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                      batch_first, norm_first, bias)
        self.encoder = TransformerEncoder(enc, num_encoder_layers, LayerNorm(d_model, layer_norm_eps))
        self.decoder = TransformerDecoder(dec, num_decoder_layers, LayerNorm(d_model, layer_norm_eps))
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(self, src: Tensor, tgt: Tensor, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
                src_is_causal: bool = False, tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        bdim = 0 if self.batch_first else 1
        if src.shape[bdim] != tgt.shape[bdim]:
            raise ValueError(f"Transformer: src {tuple(src.shape)} and tgt {tuple(tgt.shape)} differ in batch size")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"Transformer(d_model={self.d_model}) got src {tuple(src.shape)}, tgt {tuple(tgt.shape)}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, dtype=None) -> Tensor:
        """A float (sz, sz) mask: 0 on and below the diagonal, −inf above (future positions)."""
        m = np.triu(np.full((sz, sz), -np.inf, np.float32), k=1)
        return Tensor._wrap(m if dtype is None else m.astype(np.dtype(getattr(dtype, "np", dtype))))
