"""Top-level functions (``mt.cat``, ``mt.where``, ``mt.exp`` ...), as in the ``torch`` namespace.

Most are the tensor method of the same name called on the first argument (checked to be a
tensor); ``cat``, ``stack`` and ``where`` take several tensors and are defined here.
"""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._creation import tensor
from ._dims import normalize_dim
from ._tensor_arith import as_operand, promote
from ._tensor_core import TensorBase
from .autograd.grad_mode import enable_grad, no_grad
from .ops.elementwise import Where
from .ops.shape import Cat


def _tensors(seq, name):
    if isinstance(seq, TensorBase) or not hasattr(seq, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of tensors, got {type(seq).__name__}")
    seq = list(seq)
    if not seq:
        raise ValueError(f"{name}: expected a non-empty sequence of tensors")
    for i, t in enumerate(seq):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{name}: element {i} is a {type(t).__name__}, not a Tensor")
    nd = seq[0].ndim
    for i, t in enumerate(seq):
        if t.device != seq[0].device:
            raise RuntimeError(f"{name}: tensor {i} is on {t.device} but tensor 0 is on {seq[0].device}")
        if t.ndim != nd:
            raise ValueError(f"{name}: tensor {i} has shape {tuple(t.shape)} but tensor 0 has shape "
                             f"{tuple(seq[0].shape)} (different number of dims)")
    return seq


def cat(tensors, dim: int = 0) -> TensorBase:
    ts = _tensors(tensors, "cat")
    return Cat.apply(*ts, dim=normalize_dim(dim, ts[0].ndim, "cat"))


concatenate = cat


def stack(tensors, dim: int = 0) -> TensorBase:
    ts = _tensors(tensors, "stack")
    for i, t in enumerate(ts):
        if t.shape != ts[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {tuple(t.shape)} but tensor 0 has shape "
                             f"{tuple(ts[0].shape)}")
    d = normalize_dim(dim, ts[0].ndim + 1, "stack")
    return Cat.apply(*[t.unsqueeze(d) for t in ts], dim=d)


def where(condition: TensorBase, input, other) -> TensorBase:  # noqa: A002  (PyTorch's argument names)
    if not isinstance(condition, TensorBase) or condition.dtype is not _dtype.bool_:
        raise TypeError("where: condition must be a bool Tensor")
    ref = input if isinstance(input, TensorBase) else other
    if isinstance(ref, TensorBase):
        input, other = as_operand(ref, input), as_operand(ref, other)
        if isinstance(input, TensorBase):
            input, other = promote(input, other, False)
        else:
            other, input = promote(other, input, False)
    for t in (input, other):
        if isinstance(t, TensorBase) and t.device != condition.device:
            raise RuntimeError(f"where: condition is on {condition.device} but an operand is on {t.device}")
    return Where.apply(condition._data, input, other)


def _method_function(name):
    """``mt.<name>(a, ...)``: the method ``a.<name>(...)`` for a tensor ``a``."""
    def f(a, *args, **kwargs):
        if not isinstance(a, TensorBase):
            raise TypeError(f"{name}: expected a Tensor, got {type(a).__name__}")
        return getattr(a, name)(*args, **kwargs)

    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"``input.{name}(...)``: see ``Tensor.{name}``."
    return f


# Each name below is ``Tensor.<name>`` as a function; several shadow builtins (abs, round, pow,
# sum, max, min, any, all) on purpose, as the torch namespace does.
_METHOD_FUNCTIONS = (
    # math
    "exp", "log", "sqrt", "rsqrt", "square", "abs", "sign", "neg", "negative", "sin", "cos", "tanh",
    "sigmoid", "relu", "gelu", "floor", "ceil", "trunc", "round", "clamp", "clip", "maximum", "minimum",
    "pow", "div", "floor_divide", "remainder", "softmax", "log_softmax", "masked_fill", "isnan", "isinf",
    "isfinite", "matmul", "bmm", "outer",
    # reductions and orderings
    "sum", "mean", "var", "std", "amax", "amin", "max", "min", "argmax", "argmin", "any", "all", "sort",
    "argsort", "topk", "gather", "cumsum", "norm",
    # shape
    "reshape", "permute", "transpose", "flatten", "squeeze", "unsqueeze", "split", "chunk", "narrow", "tril",
    "triu", "clone", "flip", "repeat_interleave",
    # sampling
    "multinomial",
)
(exp, log, sqrt, rsqrt, square, abs, sign, neg, negative, sin, cos, tanh,
 sigmoid, relu, gelu, floor, ceil, trunc, round, clamp, clip, maximum, minimum,
 pow, div, floor_divide, remainder, softmax, log_softmax, masked_fill, isnan, isinf,
 isfinite, matmul, bmm, outer,
 sum, mean, var, std, amax, amin, max, min, argmax, argmin, any, all, sort,
 argsort, topk, gather, cumsum, norm,
 reshape, permute, transpose, flatten, squeeze, unsqueeze, split, chunk, narrow, tril,
 triu, clone, flip, repeat_interleave,
 multinomial) = (_method_function(name) for name in _METHOD_FUNCTIONS)


def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b


def numel(a: TensorBase) -> int:
    return a.numel()


def as_tensor(data, dtype=None, device=None) -> TensorBase:
    if isinstance(data, TensorBase) and dtype is None and device is None:
        return data
    return tensor(data, dtype=dtype, device=device)


def is_tensor(x) -> bool:
    return isinstance(x, TensorBase)


def allclose(a: TensorBase, b: TensorBase, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    return bool(np.allclose(a.numpy(), b.numpy(), rtol=rtol, atol=atol))


def inference_mode(mode: bool = True):
    """``no_grad`` (minitrans has no separate inference tensors)."""
    return no_grad() if mode else enable_grad()
