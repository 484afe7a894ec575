"""The four dtypes minitrans supports, as PyTorch-style dtype objects over NumPy dtypes."""
from __future__ import annotations

import numpy as np


class dtype:
    """A tensor element type: ``mt.float32`` (default), ``mt.float64``, ``mt.int64``, ``mt.bool``."""

    __slots__ = ("name", "np", "is_floating_point", "itemsize")

    def __init__(self, name: str, np_dtype) -> None:
        self.name = name
        self.np = np.dtype(np_dtype)
        self.is_floating_point = self.np.kind == "f"
        self.itemsize = self.np.itemsize

    def __repr__(self) -> str:
        return f"minitrans.{self.name}"

    def __reduce__(self):
        return (_by_name, (self.name,))


float32 = dtype("float32", np.float32)
float64 = dtype("float64", np.float64)
int64 = dtype("int64", np.int64)
bool_ = dtype("bool", np.bool_)

_ALL = (float32, float64, int64, bool_)
_FROM_NP = {d.np: d for d in _ALL}
_NAMES = {d.name: d for d in _ALL}
_NAMES.update({"float": float32, "double": float64, "long": int64})


def _by_name(name: str) -> dtype:
    return _NAMES[name]


def as_dtype(d) -> dtype:
    """Normalise a dtype given as a minitrans dtype, a NumPy dtype/type, or a name."""
    if isinstance(d, dtype):
        return d
    if isinstance(d, str):
        if d in _NAMES:
            return _NAMES[d]
        raise TypeError(f"unsupported dtype {d!r}; minitrans supports float32, float64, int64 and bool")
    if d is float:
        return float32
    if d is int:
        return int64
    if d is bool:
        return bool_
    try:
        npd = np.dtype(d)
    except TypeError:
        raise TypeError(f"unsupported dtype {d!r}; minitrans supports float32, float64, int64 and bool") from None
    if npd in _FROM_NP:
        return _FROM_NP[npd]
    raise TypeError(f"unsupported dtype {npd}; minitrans supports float32, float64, int64 and bool")


def from_numpy_dtype(npd) -> dtype:
    """The minitrans dtype that stores arrays of NumPy dtype ``npd`` (ints widen to int64)."""
    d = _FROM_NP.get(npd)
    if d is not None:
        return d
    kind = np.dtype(npd).kind
    if kind in "iu":
        return int64
    raise TypeError(f"unsupported dtype {npd}; minitrans supports float32, float64, int64 and bool")
