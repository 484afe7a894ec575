"""The functional forms of activations, linear maps, softmax, layer norm, embedding and dropout,
with the argument checks every functional form shares. Part of ``minitrans.nn.functional``
(import from there)."""
from __future__ import annotations

import numpy as np

from .. import _dtype
from .._dims import normalize_dim
from ..ops import elementwise as elementwise_ops
from ..ops import linalg as linalg_ops
from ..ops import nn as nn_ops
from ..ops.select import Pad
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
    return elementwise_ops.Relu.apply(input)


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
    return Pad.apply(input, tuple(pairs), 0 if value is None else value)


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
    return checked_linear(input, weight, bias)


def checked_linear(input: Tensor, weight: Tensor, bias: Tensor | None, layer: bool = False) -> Tensor:
    """``linear`` with every argument check, the one place they are made. ``layer=True`` (from
    ``nn.Linear``) reports an input whose last dim does not fit as the layer's error,
    ``Linear(in_features=N) got input of shape (...)``."""
    _need_float(input, "linear")
    _need_float(weight, "linear", "weight")
    if layer and (input.ndim == 0 or input.shape[-1] != weight.shape[1]):
        raise ValueError(f"Linear(in_features={weight.shape[1]}) got input of shape {tuple(input.shape)}")
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
    return linalg_ops.Linear.apply(input, weight, bias)


def _dim_arg(input: Tensor, dim, name: str) -> int:
    if dim is None:
        raise TypeError(f"{name}: pass dim explicitly (implicit dim is deprecated in PyTorch)")
    return normalize_dim(dim, input.ndim, name)


def softmax(input: Tensor, dim: int | None = None) -> Tensor:
    _need_float(input, "softmax")
    return nn_ops.Softmax.apply(input, _dim_arg(input, dim, "softmax"))


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:
    _need_float(input, "log_softmax")
    return nn_ops.LogSoftmax.apply(input, _dim_arg(input, dim, "log_softmax"))


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
    return nn_ops.LayerNorm.apply(input, weight, bias, len(ns), float(eps))


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
    return nn_ops.Embedding.apply(weight, idx, padding_idx)


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
    return elementwise_ops.Mul.apply(input, mask)
