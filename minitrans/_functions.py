"""Top-level functions (``mt.cat``, ``mt.where``, ``mt.exp`` ...), as in the ``torch`` namespace."""
from __future__ import annotations

from . import _dtype
from . import _tensor_methods as M
from .ops import elementwise as E
from .ops import shape as S
from .tensor import Tensor, tensor


def _tensors(seq, name):
    if isinstance(seq, Tensor) or not hasattr(seq, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of tensors, got {type(seq).__name__}")
    seq = list(seq)
    if not seq:
        raise ValueError(f"{name}: expected a non-empty sequence of tensors")
    for i, t in enumerate(seq):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: element {i} is a {type(t).__name__}, not a Tensor")
    nd = seq[0].ndim
    for i, t in enumerate(seq):
        if t.device != seq[0].device:
            raise RuntimeError(f"{name}: tensor {i} is on {t.device} but tensor 0 is on {seq[0].device}")
        if t.ndim != nd:
            raise ValueError(f"{name}: tensor {i} has shape {tuple(t.shape)} but tensor 0 has shape "
                             f"{tuple(seq[0].shape)} (different number of dims)")
    return seq


def cat(tensors, dim: int = 0) -> Tensor:
    ts = _tensors(tensors, "cat")
    d = M._dim(dim, ts[0].ndim, "cat")
    return S.Cat.apply(*ts, dim=d)


concatenate = cat


def stack(tensors, dim: int = 0) -> Tensor:
    ts = _tensors(tensors, "stack")
    for i, t in enumerate(ts):
        if t.shape != ts[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {tuple(t.shape)} but tensor 0 has shape {tuple(ts[0].shape)}")
    d = M._dim(dim, ts[0].ndim + 1, "stack")
    return S.Cat.apply(*[t.unsqueeze(d) for t in ts], dim=d)


def where(condition: Tensor, input, other) -> Tensor:
    if not isinstance(condition, Tensor) or condition.dtype is not _dtype.bool_:
        raise TypeError("where: condition must be a bool Tensor")
    ref = input if isinstance(input, Tensor) else other
    if isinstance(ref, Tensor):
        input, other = M._other(ref, input), M._other(ref, other)
        if isinstance(input, Tensor) and isinstance(other, Tensor):
            input, other = M._promote(input, other, False)
        elif isinstance(input, Tensor):
            input, other = M._promote(input, other, False)
        else:
            other, input = M._promote(other, input, False)
    for t in (input, other):
        if isinstance(t, Tensor) and t.device != condition.device:
            raise RuntimeError(f"where: condition is on {condition.device} but an operand is on {t.device}")
    return E.Where.apply(condition._data, input, other)


def maximum(a: Tensor, b: Tensor) -> Tensor:
    return a.maximum(b)


def minimum(a: Tensor, b: Tensor) -> Tensor:
    return a.minimum(b)


def _unary(name):
    def f(a: Tensor, *args, **kwargs) -> Tensor:
        if not isinstance(a, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(a).__name__}")
        return getattr(a, name)(*args, **kwargs)

    f.__name__ = name
    return f


for _name in ("exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "sum", "mean", "var", "std", "amax",
              "amin", "max", "min", "argmax", "argmin", "reshape", "permute", "transpose", "squeeze",
              "unsqueeze", "flatten", "clamp", "clip", "masked_fill", "pow", "matmul", "split", "chunk",
              "square", "rsqrt", "gelu", "any", "all"):
    globals()[_name] = _unary(_name)


def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b


def div(a, b):
    return a / b


def as_tensor(data, dtype=None, device=None) -> Tensor:
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return tensor(data, dtype=dtype, device=device)


def is_tensor(x) -> bool:
    return isinstance(x, Tensor)


def allclose(a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    import numpy as np

    return bool(np.allclose(a.numpy(), b.numpy(), rtol=rtol, atol=atol))
