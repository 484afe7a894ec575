"""``minitrans.nn.functional``: the functional forms of the nn ops (``import minitrans.nn.functional as F``)."""
from __future__ import annotations

import math

import numpy as np

from .. import _dtype
from ..autograd.function import Function
from ..ops import attention as A
from ..ops import elementwise as E
from ..ops import linalg as L
from ..ops import nn as N
from ..ops import shape as S
from ..ops.select import Pad as S_Pad
from ..random import generator
from ..tensor import Tensor


def _need_tensor(x, name: str, arg: str = "input") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {arg} must be a Tensor, got {type(x).__name__}")


def _need_float(x: Tensor, name: str, arg: str = "input") -> None:
    _need_tensor(x, name, arg)
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name}: {arg} must be floating point, got dtype {x.dtype}")


def relu(input: Tensor) -> Tensor:
    return E.Relu.apply(input)


def gelu(input: Tensor, approximate: str = "tanh") -> Tensor:
    return input.gelu(approximate)


def tanh(input: Tensor) -> Tensor:
    return input.tanh()  # int/bool compute in float32


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()  # int/bool compute in float32


def silu(input: Tensor) -> Tensor:
    """input·σ(input)"""
    return input * input.sigmoid()


def pad(input: Tensor, pad, mode: str = "constant", value: float | None = None) -> Tensor:
    """Constant padding, PyTorch's order: ``pad = (last_lo, last_hi, second_last_lo, second_last_hi, ...)``."""
    _need_tensor(input, "pad")
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, got {mode!r}")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: padding length {len(pad)} must be even and at most 2·ndim ({2 * input.ndim})")
    if any(p < 0 for p in pad):
        raise NotImplementedError("pad: negative padding (cropping) is not supported")
    pairs = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        pairs[input.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return S_Pad.apply(input, tuple(pairs), 0 if value is None else value)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 (..., num_classes) with a 1 at each index (num_classes = max + 1 when -1)."""
    _need_tensor(tensor, "one_hot", "tensor")
    if tensor.dtype is not _dtype.int64:
        raise RuntimeError(f"one_hot is only applicable to index tensor of dtype int64, got {tensor.dtype}")
    idx = tensor.numpy()
    n = int(idx.max()) + 1 if num_classes == -1 and idx.size else int(num_classes)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise RuntimeError(f"one_hot: class values must be in [0, {n}), got {int(idx.min())}..{int(idx.max())}")
    out = np.eye(n, dtype=np.int64)[idx] if n > 0 else np.zeros(idx.shape + (0,), np.int64)
    return Tensor._wrap(tensor.device.backend.from_numpy(out), tensor.device)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """input·weightᵀ + bias (weight: (out_features, in_features))."""
    _need_float(input, "linear")
    _need_float(weight, "linear", "weight")
    if input.ndim == 0:
        raise ValueError("linear: input must have at least 1 dimension")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if bias is not None:
        _need_float(bias, "linear", "bias")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"linear: bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},) for weight "
                             f"of shape {tuple(weight.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.dtype is not input.dtype:   # PyTorch refuses to mix; it never promotes here
            raise RuntimeError(f"linear: input has dtype {input.dtype} but {name} has dtype {p.dtype}; "
                               f"convert one of them (e.g. input.to({p.dtype}) or model.to({input.dtype}))")
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {tuple(input.shape)} has {input.shape[-1]} features but "
                         f"weight of shape {tuple(weight.shape)} expects {weight.shape[1]}")
    return L.Linear.apply(input, weight, bias)


def _dim_arg(input: Tensor, dim, name: str) -> int:
    if dim is None:
        raise TypeError(f"{name}: pass dim explicitly (implicit dim is deprecated in PyTorch)")
    if not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{name}: dim must be an int, got {type(dim).__name__}")
    n = max(input.ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{name}: dim {dim} is out of range for a tensor of shape {tuple(input.shape)}")
    return dim % n


def softmax(input: Tensor, dim: int | None = None) -> Tensor:
    _need_float(input, "softmax")
    return N.Softmax.apply(input, _dim_arg(input, dim, "softmax"))


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:
    _need_float(input, "log_softmax")
    return N.LogSoftmax.apply(input, _dim_arg(input, dim, "log_softmax"))


def _check_reduction(name: str, reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _class_target(name: str, input: Tensor, target: Tensor, ignore_index: int, weight):
    """Validate (N, C, d1, ...) scores against int64 class indices (N, d1, ...); returns (input, target)
    with a (C,) input and () target promoted to a batch of one."""
    _need_float(input, name)
    _need_tensor(target, name, "target")
    if target.dtype is not _dtype.int64:
        raise TypeError(f"{name}: target must be int64 class indices, got dtype {target.dtype}")
    if target.device != input.device:
        raise RuntimeError(f"{name}: target is on {target.device} but input is on {input.device}")
    if input.ndim == 1:
        input, target = input.unsqueeze(0), target.reshape(1)
    if input.ndim < 2:
        raise ValueError(f"{name}: input must be (N, C) or (N, C, d1, ...), got shape {tuple(input.shape)}")
    expect = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expect:
        raise ValueError(f"{name}: input of shape {tuple(input.shape)} needs target of shape {expect}, "
                         f"got {tuple(target.shape)}")
    C = input.shape[1]
    if weight is not None:
        _need_float(weight, name, "weight")
        if tuple(weight.shape) != (C,):
            raise ValueError(f"{name}: weight must have shape ({C},) (one per class), got {tuple(weight.shape)}")
        if weight.device != input.device:
            raise RuntimeError(f"{name}: weight is on {weight.device} but input is on {input.device}")
    # checked on every device (on a GPU this reads one flag back to the host each call)
    t = target._data
    xp = input.device.backend
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bool(xp.any(bad)):
        raise IndexError(f"{name}: target values must be in [0, {C}) or ignore_index={ignore_index}; "
                         f"found {int(xp.to_numpy(t[bad]).reshape(-1)[0])}")
    return input, target


def _classes_last(input: Tensor) -> Tensor:
    """(N, C, d1, ...) -> (N·d1·..., C) rows."""
    if input.ndim > 2:
        input = input.permute(0, *range(2, input.ndim), 1)
    return input.reshape(-1, input.shape[-1])


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
                  ignore_index: int = -100, reduce=None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Fused log-softmax + negative log-likelihood. input (N, C) or (N, C, d1, ...), target int64 (N, d1, ...).
    A per-class ``weight`` runs the composed log_softmax + nll_loss path, with PyTorch's weighted mean."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    input, target = _class_target("cross_entropy", input, target, ignore_index, weight)
    if weight is not None:
        return _weighted_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    rows = _classes_last(input)
    out = N.CrossEntropy.apply(rows, target._data.reshape(-1), ignore_index, float(label_smoothing), reduction)
    return out.reshape(*target.shape) if reduction == "none" else out


def _weighted_cross_entropy(input, target, weight, ignore_index, reduction, eps):
    logp = log_softmax(input, 1)
    nll = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if eps == 0.0:
        return nll
    C = input.shape[1]
    keep = Tensor._wrap((target._data != ignore_index).astype(input._data.dtype), input.device)
    wshape = (1, C) + (1,) * (input.ndim - 2)
    smooth = -(logp * weight.reshape(*wshape)).sum(1) * keep                 # (N, d1, ...)
    if reduction == "sum":
        smooth = smooth.sum()
    elif reduction == "mean":
        smooth = smooth.sum() / _picked_weight(weight, target, ignore_index).sum()
    return nll * (1.0 - eps) + smooth * (eps / C)


def _picked_weight(weight: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """weight[target] with 0 at ignored positions (shape of target)."""
    xp = target.device.backend
    t = target._data
    keep = t != ignore_index
    w = weight[xp.where(keep, t, 0)]
    return w * Tensor._wrap(keep.astype(w._data.dtype), target.device)


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` pair, mapped onto ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
             ignore_index: int = -100, reduce=None, reduction: str = "mean") -> Tensor:
    """−weight[t]·input[i, t] for t = target[i], averaged over the weights of the targets kept;
    ``input`` holds log-probabilities, (N, C) or (N, C, d1, ...)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("nll_loss", reduction)
    input, target = _class_target("nll_loss", input, target, ignore_index, weight)
    xp = input.device.backend
    rows = _classes_last(input)
    t = target._data.reshape(-1)
    keep = t != ignore_index
    picked = rows[xp.arange(t.shape[0]), xp.where(keep, t, 0)]
    w = (Tensor._wrap(keep.astype(input._data.dtype), input.device) if weight is None
         else _picked_weight(weight, target.reshape(-1), ignore_index))
    losses = -(picked * w)
    if reduction == "none":
        return losses.reshape(*target.shape)
    total = losses.sum()
    if reduction == "sum":
        return total
    return total / w.sum()


def _pointwise_pair(name: str, input: Tensor, target: Tensor) -> None:
    _need_float(input, name)
    _need_tensor(target, name, "target")
    if target.device != input.device:
        raise RuntimeError(f"{name}: target is on {target.device} but input is on {input.device}")
    try:
        np.broadcast_shapes(tuple(input.shape), tuple(target.shape))
    except ValueError:
        raise ValueError(f"{name}: input of shape {tuple(input.shape)} and target of shape "
                         f"{tuple(target.shape)} cannot be broadcast together") from None


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    return loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """(input − target)², averaged or summed."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("mse_loss", reduction)
    _pointwise_pair("mse_loss", input, target)
    d = input - target
    return _reduce(d * d, reduction)


def l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """|input − target|, averaged or summed."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("l1_loss", reduction)
    _pointwise_pair("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     size_average=None, reduce=None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """−w·[p·y·log σ(x) + (1 − y)·log(1 − σ(x))] in the stable form
    (1 − y)·x + (1 + (p − 1)·y)·softplus(−x), softplus(−x) = log(1 + e^(−|x|)) + max(−x, 0)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    _pointwise_pair("binary_cross_entropy_with_logits", input, target)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"binary_cross_entropy_with_logits: target size {tuple(target.shape)} must be the same as "
                         f"input size {tuple(input.shape)}")
    softplus_neg = (1.0 + (-input.abs()).exp()).log() + (-input).relu()
    if pos_weight is None:
        loss = (1.0 - target) * input + softplus_neg
    else:
        loss = (1.0 - target) * input + (1.0 + (pos_weight - 1.0) * target) * softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    _need_float(input, "layer_norm")
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(ns):]) != ns or len(ns) > input.ndim:
        raise ValueError(f"layer_norm: input of shape {tuple(input.shape)} does not end in normalized_shape {ns}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            _need_float(p, "layer_norm", name)
        if p is not None and tuple(p.shape) != ns:
            raise ValueError(f"layer_norm: {name} has shape {tuple(p.shape)}, expected {ns}")
        if p is not None and p.dtype is not input.dtype:
            raise RuntimeError(f"layer_norm: input has dtype {input.dtype} but {name} has dtype {p.dtype}")
    return N.LayerNorm.apply(input, weight, bias, len(ns), float(eps))


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    _need_tensor(input, "embedding")
    _need_tensor(weight, "embedding", "weight")
    if input.dtype is not _dtype.int64:
        raise TypeError(f"embedding: indices must be int64, got dtype {input.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape "
                         f"{tuple(weight.shape)}")
    if input.device != weight.device:
        raise RuntimeError(f"embedding: indices are on {input.device} but weight is on {weight.device}")
    idx = input._data
    # checked on every device (on a GPU this reads the indices' min and max back to the host)
    input.device.backend.check_index_range(idx, weight.shape[0], "embedding")
    return N.Embedding.apply(weight, idx, padding_idx)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"dropout: p must be a number, got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    # drawn by the tensor's device from a seed that is one 63-bit draw of the global generator,
    # so manual_seed fixes the mask (each device has its own stream for the same seed)
    seed = int(generator().integers(0, 2 ** 63))
    mask = input.device.backend.dropout_mask(input.shape, p, seed, input._data.dtype)
    return E.Mul.apply(input, mask)


# --------------------------------------------------------------------------- attention
def _attn_bias(attn_mask, shape_q, shape_k, xp, dtype, name="scaled_dot_product_attention"):
    """A float additive bias (−inf where masked) from a bool (True = keep) or float mask."""
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"{name}: attn_mask must be a Tensor, got {type(attn_mask).__name__}")
    m = attn_mask._data
    if attn_mask.dtype is _dtype.bool_:
        m = xp.where(m, dtype.type(0), dtype.type(-np.inf))
    elif attn_mask.dtype.is_floating_point:
        m = m.astype(dtype, copy=False)
    else:
        raise TypeError(f"{name}: attn_mask must be bool or floating point, got {attn_mask.dtype}")
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
    bias = _attn_bias(attn_mask, query.shape, key.shape, xp, query._data.dtype)
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
        outs = [A.ScaledDotProductAttention.apply(q3[i * R:(i + 1) * R], k3[i * R:(i + 1) * R],
                                                  v3[i * R:(i + 1) * R], bias[i].reshape(R, Tq, Tk),
                                                  bool(is_causal), scale) for i in range(lead[0])]
        o = S.Cat.apply(*outs, dim=0)
    else:
        if bias is not None and len(lead) != 1:
            bias = bias.reshape(B, Tq, Tk)
        o = A.ScaledDotProductAttention.apply(q3, k3, v3, bias, bool(is_causal), scale)
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
    return t if t._device.backend.is_contiguous(t._data) else S.Contiguous.apply(t)


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
