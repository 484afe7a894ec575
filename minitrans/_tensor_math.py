"""Tensor math methods: the unary functions, clamping, rounding, division with a rounding mode,
remainder, softmax and the NaN/Inf tests. Each is a thin call of one op's ``Function.apply``."""
from __future__ import annotations

import numpy as np

from . import _creation
from . import _dtype
from ._dims import normalize_dim
from ._tensor_arith import Number, as_floating, as_operand, astype, promote
from ._tensor_core import TensorBase
from .ops import elementwise as elementwise_ops
from .ops import nn as nn_ops
from .ops import unary as unary_ops
from .ops.select import Clone
from .ops.shape import MaskedFill


def _rounding(name):
    """floor / ceil / trunc / sign: zero gradient; on integer tensors (already whole) a copy, as in PyTorch."""
    def op(a: TensorBase) -> TensorBase:
        if (name != "sign" and not a.dtype.is_floating_point) or a.dtype is _dtype.bool_:
            return Clone.apply(a)
        return unary_ops.Step.apply(a, name, 0)

    op.__name__ = name
    op.__doc__ = f"Elementwise {name} (zero gradient)."
    return op


def _divide_operands(a: TensorBase, b):
    b = as_operand(a, b)
    if isinstance(b, TensorBase) and b.device != a.device:
        raise RuntimeError(f"div: tensors on different devices, {a.device} and {b.device}")
    a, b = promote(a, b, False)
    if isinstance(b, TensorBase) and b.dtype.is_floating_point and not a.dtype.is_floating_point:
        a = astype(a, b.dtype)
    return a, b


def _as_tensor_on(a: TensorBase, value) -> TensorBase:
    """``value`` (a tensor, or a number / array turned into one on ``a``'s device)."""
    value = as_operand(a, value)
    return value if isinstance(value, TensorBase) else _creation.tensor(value, device=a.device)


def _row_op(fn, name):
    """softmax / log_softmax along ``dim`` (computed in ``dtype`` when given)."""
    def op(a: TensorBase, dim: int, dtype=None) -> TensorBase:
        a = a if dtype is None else astype(a, dtype)
        if not a.dtype.is_floating_point:
            raise TypeError(f"{name}: input must be floating point, got dtype {a.dtype}")
        return fn.apply(a, normalize_dim(dim, a.ndim, name))

    op.__name__ = name
    op.__doc__ = f"{name} along ``dim``: {fn.__doc__}"
    return op


class MathMixin:
    """Elementwise math of ``Tensor`` beyond the operators."""

    __slots__ = ()

    def exp(self) -> TensorBase:
        return elementwise_ops.Exp.apply(as_floating(self))

    def log(self) -> TensorBase:
        return elementwise_ops.Log.apply(as_floating(self))

    def sqrt(self) -> TensorBase:
        return elementwise_ops.Sqrt.apply(as_floating(self))

    def rsqrt(self) -> TensorBase:
        return elementwise_ops.PowScalar.apply(as_floating(self), -0.5)

    def abs(self) -> TensorBase:
        return elementwise_ops.Abs.apply(self)

    __abs__ = abs

    def tanh(self) -> TensorBase:
        return elementwise_ops.Tanh.apply(as_floating(self))

    def sigmoid(self) -> TensorBase:
        return elementwise_ops.Sigmoid.apply(as_floating(self))

    def relu(self) -> TensorBase:
        return elementwise_ops.Relu.apply(self)

    def square(self) -> TensorBase:
        return elementwise_ops.PowScalar.apply(self, 2)

    def gelu(self, approximate: str = "tanh") -> TensorBase:
        if approximate not in ("tanh",):
            raise ValueError(f"gelu: only approximate='tanh' is implemented, got {approximate!r}")
        return elementwise_ops.Gelu.apply(as_floating(self))

    def sin(self) -> TensorBase:
        return unary_ops.Sin.apply(as_floating(self))

    def cos(self) -> TensorBase:
        return unary_ops.Cos.apply(as_floating(self))

    floor, ceil, trunc, sign = (_rounding(n) for n in ("floor", "ceil", "trunc", "sign"))

    def round(self, decimals: int = 0) -> TensorBase:
        """Round half to even (as ``torch.round``), to ``decimals`` places."""
        if not isinstance(decimals, (int, np.integer)):
            raise TypeError(f"round: decimals must be an int, got {type(decimals).__name__}")
        return Clone.apply(self) if not self.dtype.is_floating_point else \
            unary_ops.Step.apply(self, "round", int(decimals))

    def clamp(self, min=None, max=None) -> TensorBase:  # noqa: A002  (PyTorch's argument names)
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        min, max = (v.item() if isinstance(v, np.generic) else v for v in (min, max))
        return elementwise_ops.Clamp.apply(self, min, max)

    clip = clamp

    def maximum(self, other) -> TensorBase:
        return elementwise_ops.Maximum.apply(*promote(self, as_operand(self, other), False))

    def minimum(self, other) -> TensorBase:
        return elementwise_ops.Minimum.apply(*promote(self, as_operand(self, other), False))

    # ------------------------------------------------------------------ division
    def div(self, other, *, rounding_mode: str | None = None) -> TensorBase:
        """self / other; ``rounding_mode="trunc"`` rounds toward zero, ``"floor"`` down (as ``torch.div``).
        With a rounding mode, integer inputs give an integer result and the gradient is zero."""
        if rounding_mode is None:
            return self / other
        if rounding_mode not in ("trunc", "floor"):
            raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                             f"{rounding_mode!r}")
        a, b = _divide_operands(self, other)
        if isinstance(b, TensorBase) and a.dtype is not b.dtype and not b.dtype.is_floating_point:
            b = astype(b, a.dtype)
        return unary_ops.FloorDivide.apply(a, b, rounding_mode)

    divide = div

    def floor_divide(self, other) -> TensorBase:
        return self.div(other, rounding_mode="floor")

    __floordiv__ = floor_divide

    def __rfloordiv__(self, other) -> TensorBase:
        return _as_tensor_on(self, other).floor_divide(self)

    def remainder(self, other) -> TensorBase:
        """self - floor(self / other)·other: the result takes the divisor's sign, as Python's % and
        ``torch.remainder``."""
        a, b = _divide_operands(self, other)
        if isinstance(b, TensorBase) and a.dtype is not b.dtype:
            b = astype(b, a.dtype)
        return unary_ops.Remainder.apply(a, b)

    __mod__ = remainder

    def __rmod__(self, other) -> TensorBase:
        return _as_tensor_on(self, other).remainder(self)

    # ------------------------------------------------------------------ rows, masks, tests
    softmax = _row_op(nn_ops.Softmax, "softmax")
    log_softmax = _row_op(nn_ops.LogSoftmax, "log_softmax")

    def masked_fill(self, mask: TensorBase, value) -> TensorBase:
        """A copy with ``value`` wherever the (broadcast) bool ``mask`` is True."""
        if not isinstance(mask, TensorBase) or mask.dtype is not _dtype.bool_:
            raise TypeError(f"masked_fill: mask must be a bool Tensor, got "
                            f"{mask.dtype if isinstance(mask, TensorBase) else type(mask).__name__}")
        if mask.device != self.device:
            raise RuntimeError(f"masked_fill: mask is on {mask.device} but the input is on {self.device}")
        if isinstance(value, TensorBase):
            value = value.item()
        if not isinstance(value, Number):
            raise TypeError(f"masked_fill: value must be a number or a 1-element Tensor, got "
                            f"{type(value).__name__}")
        return MaskedFill.apply(self, mask._data, value)

    def isnan(self) -> TensorBase:
        return TensorBase._wrap(self._data != self._data, self._device)

    def isinf(self) -> TensorBase:
        backend = self._device.backend
        return TensorBase._wrap(backend.logical_not(backend.isfinite(self._data)) & (self._data == self._data),
                                self._device)

    def isfinite(self) -> TensorBase:
        return TensorBase._wrap(self._device.backend.isfinite(self._data), self._device)
