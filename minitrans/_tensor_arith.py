"""Tensor operators: ``+ - * / ** @``, comparisons, logical operators and dtype conversion.

Type promotion follows PyTorch where it differs from NumPy's (:func:`promote`). The binary
operators are made by one factory each (:func:`_binary`, :func:`_compare`, :func:`_logical`) and
bound in the class body, so they cost no extra call on the hot path.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _creation
from . import _dtype
from ._tensor_core import TensorBase
from .ops import linalg as linalg_ops
from .ops.elementwise import Add, Cast, Div, Mul, Neg, Pow, PowScalar, RPowScalar, Sub

Number = (numbers.Number, np.generic)


def as_operand(a: TensorBase, b):
    """Validate the second operand of a binary op: a Tensor, a number, or a bool/number array."""
    if isinstance(b, np.generic):
        return b.item()  # a NumPy scalar acts as a Python number: np.float64 must not promote float32 tensors
    if isinstance(b, TensorBase) or isinstance(b, Number):
        return b
    if isinstance(b, (list, tuple, np.ndarray)):
        return _creation.tensor(b, dtype=a.dtype if a.dtype.is_floating_point else None, device=a.device)
    raise TypeError(f"unsupported operand type for a Tensor op: {type(b).__name__}")


def astype(a: TensorBase, dtype) -> TensorBase:
    """``a`` converted to ``dtype`` (``a`` itself when it already has it); differentiable between floats."""
    d = _dtype.as_dtype(dtype)
    if d.np == a._data.dtype:
        return a
    if a.requires_grad and d.is_floating_point:
        return Cast.apply(a, d.np)
    return TensorBase._wrap(a._data.astype(d.np), a._device)


def as_floating(a: TensorBase) -> TensorBase:
    """Float ops on int/bool tensors compute in float32, as in PyTorch."""
    return a if a._data.dtype.kind == "f" else astype(a, _dtype.float32)


def promote(a: TensorBase, b, div: bool):
    """PyTorch's type promotion where it differs from NumPy's: an int/bool tensor meets a
    float (tensor or Python float) -> the float dtype (float32 for a Python float, never
    float64); int / int -> float32."""
    a_float = a._data.dtype.kind == "f"
    if isinstance(b, TensorBase):
        b_float = b._data.dtype.kind == "f"
        if a_float and not b_float:
            b = astype(b, a.dtype)
        elif b_float and not a_float:
            a = astype(a, b.dtype)
        elif not a_float and not b_float and div:
            a, b = astype(a, _dtype.float32), astype(b, _dtype.float32)
    elif not a_float and (div or isinstance(b, float)):
        a = astype(a, _dtype.float32)
    return a, b


def _binary(fn, name):
    """``(self <op> other, other <op> self)`` for the elementwise Function ``fn``.

    A float tensor meeting a Python float or int, or another float tensor, needs no promotion
    (``promote`` only changes int/bool operands), so that common case goes straight to ``fn.apply``.
    """
    div = name == "truediv"

    def op(self, other):
        kind = type(other)
        if kind is not float and kind is not int:
            other = as_operand(self, other)
            if isinstance(other, TensorBase) and other._data.dtype.kind != "f":
                return fn.apply(*promote(self, other, div))
        if self._data.dtype.kind != "f":
            return fn.apply(*promote(self, other, div))
        return fn.apply(self, other)

    def reflected(self, other):
        kind = type(other)
        if kind is not float and kind is not int:
            other = as_operand(self, other)
            if isinstance(other, TensorBase) and other._data.dtype.kind != "f":
                self, other = promote(self, other, div)
                return fn.apply(other, self)
        if self._data.dtype.kind != "f":
            self, other = promote(self, other, div)
        return fn.apply(other, self)

    op.__name__, reflected.__name__ = f"__{name}__", f"__r{name}__"
    op.__doc__, reflected.__doc__ = f"{fn.__doc__}, with self as a", f"{fn.__doc__}, with self as b"
    return op, reflected


def _compare(name, f):
    """The comparison ``f`` as a method giving a bool tensor (no gradient)."""
    def op(self, other):
        other = as_operand(self, other)
        other_data = other._data if isinstance(other, TensorBase) else other
        if isinstance(other, TensorBase) and other._device != self._device:
            raise RuntimeError(f"{name}: tensors on different devices, {self._device} and {other._device}")
        try:
            return TensorBase._wrap(f(self._data, other_data), self._device)
        except ValueError:
            raise ValueError(f"{name}: shapes {tuple(self.shape)} and {tuple(getattr(other_data, 'shape', ()))} "
                             "cannot be broadcast together") from None

    op.__name__ = f"__{name}__"
    op.__doc__ = f"Elementwise {name} as a bool tensor."
    return op


def _logical(name, f):
    """The logical operator ``f`` on bool tensors."""
    def op(self, other):
        other = as_operand(self, other)
        if self.dtype is not _dtype.bool_ or (isinstance(other, TensorBase) and other.dtype is not _dtype.bool_):
            raise TypeError(f"{name}: expected bool tensors, got {self.dtype}"
                            f"{' and ' + str(other.dtype) if isinstance(other, TensorBase) else ''}")
        return TensorBase._wrap(f(self._data, other._data if isinstance(other, TensorBase) else other), self._device)

    op.__name__ = f"logical_{name}"
    op.__doc__ = f"Elementwise logical {name} of bool tensors."
    return op


def matmul(a: TensorBase, b: TensorBase) -> TensorBase:
    """The matrix product (batched and broadcast over leading dims); both operands need the same dtype."""
    if not isinstance(a, TensorBase) or not isinstance(b, TensorBase):
        raise TypeError(f"matmul expects Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.dtype is not b.dtype:  # as PyTorch: no promotion inside matmul
        raise RuntimeError(f"matmul: expected both operands to have the same dtype, got {a.dtype} and {b.dtype}")
    return linalg_ops.Matmul.apply(a, b)


class ArithmeticMixin:
    """Operators and dtype conversion of ``Tensor``."""

    __slots__ = ()

    __add__, __radd__ = _binary(Add, "add")
    __sub__, __rsub__ = _binary(Sub, "sub")
    __mul__, __rmul__ = _binary(Mul, "mul")
    __truediv__, __rtruediv__ = _binary(Div, "truediv")

    matmul = __matmul__ = matmul

    def add(self, other, *, alpha=1) -> TensorBase:
        """self + alpha * other (PyTorch's ``Tensor.add``)."""
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other, *, alpha=1) -> TensorBase:
        """self - alpha * other (PyTorch's ``Tensor.sub``)."""
        return self - (other if alpha == 1 else other * alpha)

    def mul(self, other) -> TensorBase:
        """self * other (PyTorch's ``Tensor.mul``)."""
        return self * other

    subtract, multiply = sub, mul

    def __rmatmul__(self, other) -> TensorBase:
        return matmul(as_operand(self, other), self)

    def __neg__(self) -> TensorBase:
        if self.dtype is _dtype.bool_:
            raise TypeError("neg: the - operator is not supported on bool tensors; use ~ or logical_not()")
        return Neg.apply(self)

    def __pos__(self) -> TensorBase:
        return self

    def neg(self) -> TensorBase:
        return -self

    negative = neg

    def pow(self, exponent) -> TensorBase:
        """self ** exponent (a number or a tensor)."""
        a, p = self, as_operand(self, exponent)
        if isinstance(p, Number):
            if isinstance(p, float):  # int ** 0.5 -> float32, as PyTorch (NumPy: float64)
                a = as_floating(a)
            elif a.dtype is _dtype.bool_:  # bool ** 2 -> int64 (NumPy: int8, which has no minitrans dtype)
                a = astype(a, _dtype.int64)
            return PowScalar.apply(a, p)
        a, p = promote(a, p, False)
        return Pow.apply(a, p)

    __pow__ = pow

    def __rpow__(self, base) -> TensorBase:
        a, c = self, as_operand(self, base)
        if isinstance(c, Number):
            if isinstance(c, float):  # 0.5 ** int_tensor -> float32 (was truncated to int)
                a = as_floating(a)
            elif a.dtype is _dtype.bool_:  # 2 ** bool_tensor -> int64
                a = astype(a, _dtype.int64)
            return RPowScalar.apply(a, c)
        c, a = promote(c, a, False)
        return Pow.apply(c, a)

    # ------------------------------------------------------------------ comparisons
    __lt__ = lt = _compare("lt", lambda x, y: x < y)
    __le__ = le = _compare("le", lambda x, y: x <= y)
    __gt__ = gt = _compare("gt", lambda x, y: x > y)
    __ge__ = ge = _compare("ge", lambda x, y: x >= y)
    __eq__ = eq = _compare("eq", lambda x, y: x == y)
    __ne__ = ne = _compare("ne", lambda x, y: x != y)

    def __hash__(self) -> int:
        # by identity: == is elementwise (as in PyTorch), so tensors hash as objects. Defined here,
        # beside __eq__, because a class that defines __eq__ alone gets __hash__ = None.
        return id(self)

    # ------------------------------------------------------------------ logical
    __and__ = logical_and = _logical("and", lambda x, y: x & y)
    __or__ = logical_or = _logical("or", lambda x, y: x | y)
    __xor__ = logical_xor = _logical("xor", lambda x, y: x ^ y)

    def logical_not(self) -> TensorBase:
        if self.dtype is not _dtype.bool_:
            raise TypeError(f"~ expects a bool tensor, got {self.dtype}")
        return TensorBase._wrap(~self._data, self._device)

    __invert__ = logical_not

    # ------------------------------------------------------------------ dtype
    astype = astype
    type = astype

    def type_as(self, other: TensorBase) -> TensorBase:
        return astype(self, other.dtype)

    def float(self) -> TensorBase:
        return astype(self, _dtype.float32)

    def double(self) -> TensorBase:
        return astype(self, _dtype.float64)

    def long(self) -> TensorBase:
        return astype(self, _dtype.int64)

    def bool(self) -> TensorBase:
        return astype(self, _dtype.bool_)
