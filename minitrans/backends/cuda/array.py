"""``CudaArray``: an n-dimensional strided view of numba-cuda device memory, its views
(``CudaArray._view``: same memory, other shape / strides / offset, laid out by
``kernels/cuda/layout.py``; ``reshape`` without a copy where NumPy could), and the only two
host<->device entry points, ``from_numpy`` / ``to_numpy``.

The operators and methods forward to ``ops`` and ``indexing`` (imported at the bottom of
this module: those modules build on ``CudaArray``). See the package docstring for the design.
"""
from __future__ import annotations

import numbers

import numpy as np

from ...kernels.cuda._util import counters, device_array, flat_view, strided_view
from ...kernels.cuda.layout import c_strides, element_count, is_c_contiguous, nocopy_strides, permutation, span
from .pending_checks import PENDING, VALUE_BYTES

_Scalar = (numbers.Number, np.generic)


class _Flags:
    __slots__ = ("c_contiguous",)

    def __init__(self, c: bool) -> None:
        self.c_contiguous = c

    def __getitem__(self, k):
        if k in ("C_CONTIGUOUS", "C", "c_contiguous"):
            return self.c_contiguous
        raise KeyError(k)


class CudaArray:
    """An n-dimensional array in CUDA device memory (see the module docstring)."""

    __slots__ = ("_device_array", "shape", "dtype", "_elem_strides", "_base", "__weakref__")
    __array_ufunc__ = None  # ``np.float32(2) * x`` defers to ``x.__rmul__``
    __array_priority__ = 2000

    def __init__(self, device_array, base=None) -> None:
        self._device_array = device_array  # the numba device array holding the elements
        self._base = base  # the CudaArray whose memory this one views (None: it owns its memory)
        self.shape = tuple(int(s) for s in device_array.shape)
        self.dtype = np.dtype(device_array.dtype)
        item = self.dtype.itemsize
        self._elem_strides = tuple(int(s) // item for s in device_array.strides)


    # ------------------------------------------------------------ attributes
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return element_count(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def strides(self) -> tuple:
        return tuple(s * self.dtype.itemsize for s in self._elem_strides)

    @property
    def flags(self) -> _Flags:
        return _Flags(self._is_contiguous())

    @property
    def T(self) -> "CudaArray":
        return self.transpose()

    def _is_contiguous(self) -> bool:
        return is_c_contiguous(self.shape, self._elem_strides)


    def _span(self) -> int:
        return span(self.shape, self._elem_strides)

    def _view(self, offset, shape, strides) -> "CudaArray":
        """A view of this array's memory: element ``i`` at this array's first element + ``offset +
        sum(i_k * strides[k])``; it records the array that owns the memory (see ``shares_storage``)."""
        return CudaArray(strided_view(self._device_array, offset, shape, strides),
                         self if self._base is None else self._base)

    def __repr__(self) -> str:
        return f"CudaArray(shape={self.shape}, dtype={self.dtype})"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        raise TypeError("a CudaArray lives in device memory: copy it explicitly with CUDABackend.to_numpy")

    def __iter__(self):
        raise TypeError("iterating over a CudaArray would copy every element to the host")

    # host reads (one value each, through to_numpy)
    def item(self):
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return to_numpy(self).reshape(()).item()

    def tolist(self):
        return to_numpy(self).tolist()

    def __bool__(self) -> bool:
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    # ------------------------------------------------------------ shape
    def reshape(self, *shape, order: str = "C") -> "CudaArray":
        if order != "C":
            raise NotImplementedError("only C-order reshape")
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if shape.count(-1) > 1:
            raise ValueError("can only specify one unknown dimension")
        if -1 in shape:
            known = element_count([s for s in shape if s != -1])
            if known == 0 or self.size % known:
                raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if element_count(shape) != self.size:
            raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
        if shape == self.shape:
            return self._view(0, shape, self._elem_strides)
        strides = nocopy_strides(self.shape, self._elem_strides, shape)
        if strides is None:
            return copy(self).reshape(shape)
        return self._view(0, shape, strides)

    def transpose(self, *axes) -> "CudaArray":
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        perm = permutation(axes, self.ndim)
        return self._view(0, [self.shape[a] for a in perm], [self._elem_strides[a] for a in perm])

    def ravel(self) -> "CudaArray":
        return self.reshape(-1)

    def flatten(self) -> "CudaArray":
        return copy(self).reshape(-1)

    def squeeze(self, axis=None) -> "CudaArray":
        if axis is None:
            keep = [i for i, n in enumerate(self.shape) if n != 1]
        else:
            ax = {a % self.ndim for a in ((axis,) if isinstance(axis, int) else axis)}
            keep = [i for i in range(self.ndim) if i not in ax]
        return self._view(0, [self.shape[i] for i in keep], [self._elem_strides[i] for i in keep])

    def astype(self, dtype, copy: bool = True) -> "CudaArray":
        return astype(self, dtype, copy)

    def copy(self) -> "CudaArray":
        return copy(self)

    def clip(self, lo=None, hi=None, out=None) -> "CudaArray":
        return clip(self, lo, hi, out)

    # ------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, dtype=None):
        r = sum_(self, axis=axis, keepdims=keepdims)
        return r if dtype is None else r.astype(dtype, copy=False)

    def mean(self, axis=None, keepdims=False):
        return mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return amax(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return amin(self, axis=axis, keepdims=keepdims)

    def any(self, axis=None, keepdims=False):
        return any_(self, axis=axis, keepdims=keepdims)

    def all(self, axis=None, keepdims=False):
        return all_(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None, keepdims=False):
        return argmax(self, axis=axis, keepdims=keepdims)

    def argmin(self, axis=None, keepdims=False):
        return argmin(self, axis=axis, keepdims=keepdims)

    # ------------------------------------------------------------ indexing
    def __getitem__(self, idx) -> "CudaArray":
        return _getitem(self, idx)

    def __setitem__(self, idx, value) -> None:
        _setitem(self, idx, value)

    # ------------------------------------------------------------ operators
    def __add__(self, o): return _binary("add", self, o)
    def __radd__(self, o): return _binary("add", o, self)
    def __sub__(self, o): return _binary("sub", self, o)
    def __rsub__(self, o): return _binary("sub", o, self)
    def __mul__(self, o): return _binary("mul", self, o)
    def __rmul__(self, o): return _binary("mul", o, self)
    def __truediv__(self, o): return _binary("div", self, o)
    def __rtruediv__(self, o): return _binary("div", o, self)
    def __pow__(self, o): return _binary("pow", self, o)
    def __rpow__(self, o): return _binary("pow", o, self)
    def __lt__(self, o): return _binary("lt", self, o)
    def __le__(self, o): return _binary("le", self, o)
    def __gt__(self, o): return _binary("gt", self, o)
    def __ge__(self, o): return _binary("ge", self, o)
    def __eq__(self, o): return _binary("eq", self, o)  # noqa: E704
    def __ne__(self, o): return _binary("ne", self, o)
    def __and__(self, o): return _logical("and", self, o)
    def __rand__(self, o): return _logical("and", o, self)
    def __or__(self, o): return _logical("or", self, o)
    def __ror__(self, o): return _logical("or", o, self)
    def __xor__(self, o): return _logical("xor", self, o)
    def __rxor__(self, o): return _logical("xor", o, self)
    def __neg__(self): return _unary("neg", self)
    def __pos__(self): return self
    def __abs__(self): return _unary("abs", self)
    def __invert__(self): return logical_not(self, _invert=True)
    def __iadd__(self, o): return _inplace("add", self, o)
    def __isub__(self, o): return _inplace("sub", self, o)
    def __imul__(self, o): return _inplace("mul", self, o)
    def __itruediv__(self, o): return _inplace("div", self, o)

    __hash__ = None


def shares_storage(a, b) -> bool:
    """True when ``a`` and ``b`` are the same array or views of one allocation (from the ``_base``
    each view records, not from addresses)."""
    if a is b:
        return True
    if not (isinstance(a, CudaArray) and isinstance(b, CudaArray)):
        return False
    return (a if a._base is None else a._base) is (b if b._base is None else b._base)


# ---------------------------------------------------------------- conversion
def from_numpy(a, copy: bool = False) -> CudaArray:
    """Copy a host array to the device (the host->device entry point). The result is always fresh
    device memory, so ``copy`` (which the contract offers for backends that could share host
    memory) changes nothing here."""
    a = np.asarray(a)
    if not a.flags.c_contiguous:
        a = a.copy(order="C")
    out = device_array(a.shape, a.dtype)  # pooled, like every device allocation of the backend
    if a.size:
        out.copy_to_device(a)
    return CudaArray(out)


def to_numpy(a) -> np.ndarray:
    """Copy a device array to the host (the device->host entry point). Every host read the user
    asks for passes here, so here the pending index-range checks are read back and a failed one
    raises its IndexError: in the same transfer for a read of at most VALUE_BYTES (``.item()``),
    else in one more, and only when some are pending."""
    if not isinstance(a, CudaArray):
        return np.asarray(a)
    c = a if a._is_contiguous() or a.size == 0 else copy(a)
    if len(PENDING) and 0 < a.nbytes <= VALUE_BYTES:  # .item(): the value travels with the checks
        return PENDING.read_along(flat_view(c._device_array)[0]).reshape(a.shape)
    PENDING.raise_first_violation()
    if a.size == 0:
        return np.empty(a.shape, a.dtype)
    counters.syncs += 1  # the host waits for the device: the copy follows all queued work
    return np.asarray(c._device_array.copy_to_host()).reshape(a.shape)


# The operator / method implementations. Imported last: ops and indexing import CudaArray
# from this module (the package __init__ imports this module first).
from .ops import (  # noqa: E402
    _binary, _inplace, _logical, _unary, all_, amax, amin, any_, argmax, argmin, astype, clip, copy,
    logical_not, mean, sum_,
)
from .indexing import _getitem, _setitem  # noqa: E402
