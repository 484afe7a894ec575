"""The CUDA backend: ``CudaArray`` (a strided view of numba-cuda device memory) and
``CUDABackend``, the same namespace of primitives as ``cpu.CPUBackend``.

Design
------
* A ``CudaArray`` wraps one numba device array ``_d`` (a ``DeviceNDArray`` on a GPU, a
  ``FakeCUDAArray`` under ``NUMBA_ENABLE_CUDASIM=1``). Views — basic slicing, ``None``,
  ``transpose``/``moveaxis``/``.T``, ``broadcast_to`` (stride 0), ``reshape`` whenever
  NumPy could reshape without a copy — are new device arrays over the *same* memory with
  other shape/strides/offset (``_view``); nothing is copied. The kernels of
  ``minitrans.kernels.cuda`` take any non-negative strided view, so transposed weights go
  straight into matmul and broadcast biases straight into attention.
* Every computation runs on the device through ``minitrans.kernels.cuda``: elementwise /
  comparison / ``where`` / reductions / matmul / fused nn kernels, plus the plumbing in
  ``kernels/cuda/array.py`` (fill, arange, strided copy, logical maps, index gather /
  scatter-add, dropout mask).
* Python scalars in expressions (``x * 0.5``, ``a > 0``) become cached 0-d device
  constants filled by a kernel (``_const``): launching a kernel with a scalar argument is
  not a host->device copy.
* Host <-> device copies happen only in ``from_numpy`` / ``to_numpy`` and where host data
  enters explicitly: ``asarray``/``ascontiguousarray`` of host arrays, host NumPy operands
  or index arrays, and the two reads listed below. ``CudaArray.item()``/``bool()``/
  ``float()``/``int()`` read one value through ``to_numpy``. ``np.asarray(cuda_array)``
  raises instead of copying silently.
* Host reads that are unavoidable by design: indexing with a **bool mask** that lives on
  the device (the result's size is data-dependent: the mask is copied to the host for
  ``np.nonzero``). The training step of the library never does this.
* Dtype rules follow NumPy 2 (``np.result_type`` with weak Python scalars).
* In-place operators (``+= -= *= /=``) write into the array's own memory (in the result
  dtype cast to the array's dtype); operands are assumed not to overlap the target.
* Not supported (raise): negative-step slices, more than 6 dims in a kernel, ``~`` on
  non-bool arrays.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np
from numba import cuda

from ..kernels import cuda as K
from ..kernels.cuda import array as KA
from ..kernels.cuda._util import MAX_DIMS, broadcast_strides, simulated
from .cpu import _sum_to

_FLOAT_FUNCS = frozenset({"exp", "log", "sqrt", "tanh", "sigmoid"})
_COMPARE = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
_Scalar = (numbers.Number, np.generic)


def _n(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _c_strides(shape) -> tuple[int, ...]:
    st, acc = [], 1
    for s in reversed(shape):
        st.append(acc)
        acc *= s
    return tuple(reversed(st))


def _view(d, off: int, shape, strides):
    """A device array over the memory of ``d``: element ``i`` at ``d``'s first element
    + ``off + sum(i_k * strides[k])`` (element units, non-negative)."""
    shape = tuple(int(s) for s in shape)
    strides = tuple(int(s) for s in strides)
    if any(s < 0 for s in strides) or off < 0:
        raise NotImplementedError("negative strides are not supported on cuda")
    if _n(shape) == 0:
        return cuda.device_array(shape, dtype=d.dtype)
    item = d.dtype.itemsize
    bstrides = tuple(s * item for s in strides)
    if simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        ast = np.lib.stride_tricks.as_strided
        p = ast(d._ary, shape=(off + 1,), strides=(item,))[off:]
        return FakeCUDAArray(ast(p, shape=shape, strides=bstrides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(shape, bstrides, d.dtype, gpu_data=d.gpu_data.view(off * item))


def _nocopy_strides(shape, strides, newshape):
    """Strides viewing (shape, strides) as ``newshape`` without a copy, or None (NumPy's rule)."""
    old = [(n, s) for n, s in zip(shape, strides) if n != 1]
    oshape = [n for n, _ in old]
    ost = [s for _, s in old]
    nst = [0] * len(newshape)
    oi, oj, ni, nj = 0, 1, 0, 1
    on, nn = len(oshape), len(newshape)
    while ni < nn and oi < on:
        np_, op = newshape[ni], oshape[oi]
        while np_ != op:
            if np_ < op:
                np_ *= newshape[nj]
                nj += 1
            else:
                op *= oshape[oj]
                oj += 1
        for ok in range(oi, oj - 1):
            if ost[ok] != oshape[ok + 1] * ost[ok + 1]:
                return None
        nst[nj - 1] = ost[oj - 1]
        for nk in range(nj - 1, ni, -1):
            nst[nk - 1] = nst[nk] * newshape[nk]
        ni, nj, oi, oj = nj, nj + 1, oj, oj + 1
    for nk in range(ni, nn):
        nst[nk] = 0  # trailing size-1 dims
    return tuple(nst)


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

    __slots__ = ("_d", "shape", "dtype", "_st", "__weakref__")
    __array_ufunc__ = None  # ``np.float32(2) * x`` defers to ``x.__rmul__``
    __array_priority__ = 2000

    def __init__(self, d) -> None:
        self._d = d
        self.shape = tuple(int(s) for s in d.shape)
        self.dtype = np.dtype(d.dtype)
        item = self.dtype.itemsize
        self._st = tuple(int(s) // item for s in d.strides)

    # ------------------------------------------------------------ attributes
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return _n(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def strides(self) -> tuple:
        return tuple(s * self.dtype.itemsize for s in self._st)

    @property
    def flags(self) -> _Flags:
        return _Flags(self._is_c())

    @property
    def T(self) -> "CudaArray":
        return self.transpose()

    def _is_c(self) -> bool:
        if self.size == 0:
            return True
        exp = 1
        for n, s in zip(reversed(self.shape), reversed(self._st)):
            if n != 1 and s != exp:
                return False
            exp *= n
        return True

    def _span(self) -> int:
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self._st))

    def _v(self, off, shape, strides) -> "CudaArray":
        return CudaArray(_view(self._d, off, shape, strides))

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
            known = _n([s for s in shape if s != -1])
            if known == 0 or self.size % known:
                raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if _n(shape) != self.size:
            raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
        if shape == self.shape:
            return self._v(0, shape, self._st)
        st = _c_strides(shape) if self._is_c() else _nocopy_strides(self.shape, self._st, shape)
        if st is None:
            return copy(self).reshape(shape)
        return self._v(0, shape, st)

    def transpose(self, *axes) -> "CudaArray":
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        nd = self.ndim
        axes = tuple(range(nd - 1, -1, -1)) if not axes else tuple(int(a) % max(nd, 1) for a in axes)
        if sorted(axes) != list(range(nd)):
            raise ValueError(f"axes {axes} don't match array of {nd} dims")
        return self._v(0, [self.shape[a] for a in axes], [self._st[a] for a in axes])

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
        return self._v(0, [self.shape[i] for i in keep], [self._st[i] for i in keep])

    def astype(self, dtype, copy: bool = True) -> "CudaArray":
        return astype(self, dtype, copy)

    def copy(self) -> "CudaArray":
        return copy(self)

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


# ---------------------------------------------------------------- conversion
def from_numpy(a) -> CudaArray:
    """Copy a host array to the device (the host->device entry point)."""
    a = np.asarray(a)
    if not a.flags.c_contiguous:
        a = a.copy(order="C")
    return CudaArray(cuda.to_device(a))


def to_numpy(a) -> np.ndarray:
    """Copy a device array to the host (the device->host entry point)."""
    if not isinstance(a, CudaArray):
        return np.asarray(a)
    if a.size == 0:
        return np.empty(a.shape, a.dtype)
    c = a if a._is_c() else copy(a)
    return np.asarray(c._d.copy_to_host()).reshape(a.shape)


def _dev(x) -> CudaArray:
    """``x`` as a CudaArray; host arrays are uploaded (an explicit host->device copy)."""
    if isinstance(x, CudaArray):
        return x
    if isinstance(x, _Scalar):
        return asarray(x)
    return from_numpy(x)


_CONSTS: dict = {}


def _const(v, dtype):
    """A cached 0-d device array holding ``v`` as ``dtype`` (internal operands only: never
    handed out, never written)."""
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        cv = dtype.type(v)
    key = (dtype.str, cv.tobytes())
    d = _CONSTS.get(key)
    if d is None:
        if len(_CONSTS) > 1024:
            _CONSTS.clear()
        d = _CONSTS[key] = KA.full((), cv, dtype)
    return d


def _dt(x):
    """What np.result_type should see for an operand (a dtype, or the scalar itself)."""
    if isinstance(x, CudaArray):
        return x.dtype
    if isinstance(x, np.ndarray):
        return x.dtype
    return x


def _operand(x, dtype):
    """Device array for an operand: CudaArray -> its device array, scalar -> cached constant."""
    if isinstance(x, CudaArray):
        return x._d
    if isinstance(x, _Scalar):
        return _const(x, dtype)
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return _const(x[()], dtype)
    return _dev(x)._d


def _norm_scalar(x):
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return x[()]
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    return x


def _shape_of(x):
    return tuple(getattr(x, "shape", ()))


# ---------------------------------------------------------------- elementwise
def _unary(op, x) -> CudaArray:
    x = _dev(x)
    if op in _FLOAT_FUNCS and x.dtype.kind in "biu":
        x = astype(x, np.float64)
    return CudaArray(K.unary(op, x._d))


def _binary(op, a, b) -> CudaArray:
    a, b = _norm_scalar(a), _norm_scalar(b)
    if not isinstance(a, (CudaArray, np.ndarray) + _Scalar) or not isinstance(b, (CudaArray, np.ndarray) + _Scalar):
        return NotImplemented
    rt = np.result_type(_dt(a), _dt(b))
    shape = np.broadcast_shapes(_shape_of(a), _shape_of(b))
    if op in _COMPARE:
        dtype = np.dtype(np.bool_)
    elif op == "div" and rt.kind in "biu":
        dtype, rt = np.dtype(np.float64), np.dtype(np.float64)
    else:
        dtype = rt
    da, db = _operand(a, rt), _operand(b, rt)
    out = cuda.device_array(shape, dtype=dtype)
    K.binary(op, da, db, out=out)
    return CudaArray(out)


def _logical(op, a, b) -> CudaArray:
    a, b = _norm_scalar(a), _norm_scalar(b)
    for x in (a, b):
        if np.result_type(_dt(x)) != np.bool_:
            raise TypeError(f"'{op}' is only supported between bool arrays on cuda")
    return CudaArray(KA.logical_binary(op, _operand(a, np.bool_), _operand(b, np.bool_)))


def _inplace(op, self: CudaArray, o) -> CudaArray:
    r = _binary(op, self, o)
    if r.shape != self.shape:
        raise ValueError(f"non-broadcastable output operand with shape {self.shape} doesn't match the "
                         f"broadcast shape {r.shape}")
    KA.copy_into(self._d, r._d)
    return self


def logical_not(a, _invert: bool = False) -> CudaArray:
    a = _dev(a)
    if a.dtype == np.bool_:
        return CudaArray(KA.logical_unary("not", a._d))
    if _invert:
        raise TypeError("~ on cuda is only supported for bool arrays")
    return _binary("eq", a, 0)


def isfinite(a) -> CudaArray:
    a = _dev(a)
    if a.dtype.kind != "f":
        return full(a.shape, True, np.bool_)
    return CudaArray(KA.logical_unary("isfinite", a._d))


def where(cond, a, b) -> CudaArray:
    cond, a, b = _norm_scalar(cond), _norm_scalar(a), _norm_scalar(b)
    rt = np.result_type(_dt(a), _dt(b))
    shape = np.broadcast_shapes(_shape_of(cond), _shape_of(a), _shape_of(b))
    dc = _operand(cond, np.bool_)
    if np.dtype(dc.dtype) != np.bool_:
        dc = _binary("ne", CudaArray(dc), 0)._d
    out = cuda.device_array(shape, dtype=rt)
    K.where(dc, _operand(a, rt), _operand(b, rt), out=out)
    return CudaArray(out)


def maximum(a, b) -> CudaArray:
    return _binary("maximum", a, b)


def minimum(a, b) -> CudaArray:
    return _binary("minimum", a, b)


def power(a, b) -> CudaArray:
    return _binary("pow", a, b)


def clip(a, lo=None, hi=None) -> CudaArray:
    if lo is None and hi is None:
        raise ValueError("One of max or min must be given")
    r = _dev(a)
    if lo is not None:
        r = maximum(r, lo)
    if hi is not None:
        r = minimum(r, hi)
    return r


def sigmoid(x) -> CudaArray:
    return _unary("sigmoid", x)


def astype(a, dtype, copy_: bool = True) -> CudaArray:
    a = _dev(a)
    dtype = np.dtype(dtype)
    if dtype == a.dtype:
        return copy(a) if copy_ else a
    if dtype == np.bool_:
        return _binary("ne", a, 0)
    out = cuda.device_array(a.shape, dtype=dtype)
    K.unary("identity", a._d, out=out)
    return CudaArray(out)


def copy(a) -> CudaArray:
    """A fresh C-contiguous copy (on the device)."""
    a = _dev(a)
    out = cuda.device_array(a.shape, dtype=a.dtype)
    if a.size:
        KA.copy_into(out, a._d)
    return CudaArray(out)


def ascontiguousarray(a) -> CudaArray:
    if isinstance(a, CudaArray):
        return a if a._is_c() else copy(a)
    return asarray(a)


def asarray(a, dtype=None) -> CudaArray:
    if isinstance(a, CudaArray):
        return a if dtype is None else astype(a, dtype, False)
    if isinstance(a, _Scalar):
        dt = np.dtype(dtype) if dtype is not None else np.asarray(a).dtype
        return CudaArray(KA.full((), a, dt))  # filled on the device, no copy
    return from_numpy(np.asarray(a, dtype=dtype))


def errstate(**kwargs):
    """Device kernels raise no floating-point warnings: a no-op context."""
    return contextlib.nullcontext()


# ---------------------------------------------------------------- creation
def _shape_arg(shape):
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)


def full(shape, fill_value, dtype=None) -> CudaArray:
    dtype = np.asarray(fill_value).dtype if dtype is None else np.dtype(dtype)
    return CudaArray(KA.full(_shape_arg(shape), fill_value, dtype))


def zeros(shape, dtype=float) -> CudaArray:
    return full(shape, 0, dtype)


def ones(shape, dtype=float) -> CudaArray:
    return full(shape, 1, dtype)


def empty(shape, dtype=float) -> CudaArray:
    return CudaArray(cuda.device_array(_shape_arg(shape), dtype=np.dtype(dtype)))


def zeros_like(a, dtype=None) -> CudaArray:
    return zeros(a.shape, a.dtype if dtype is None else dtype)


def ones_like(a, dtype=None) -> CudaArray:
    return ones(a.shape, a.dtype if dtype is None else dtype)


def arange(start, stop=None, step=1, dtype=None) -> CudaArray:
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    dt = np.result_type(start, stop, step) if dtype is None else np.dtype(dtype)
    n = max(0, int(math.ceil((stop - start) / step)))
    return CudaArray(KA.arange(n, start, step, dt))


# ---------------------------------------------------------------- reductions
def _axes(axis, ndim):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise np.exceptions.AxisError(a, ndim)
        out.append(int(a) % max(ndim, 1))
    return tuple(out)


def sum_(a, axis=None, keepdims=False) -> CudaArray:
    a = _dev(a)
    if a.dtype.kind in "biu":
        a = astype(a, np.int64, False)
    return CudaArray(K.reduce("sum", a._d, _axes(axis, a.ndim), bool(keepdims)))


def mean(a, axis=None, keepdims=False) -> CudaArray:
    a = _dev(a)
    if a.dtype.kind in "biu":
        a = astype(a, np.float64)
    return CudaArray(K.reduce("mean", a._d, _axes(axis, a.ndim), bool(keepdims)))


def _extreme(op, a, axis, keepdims):
    a = _dev(a)
    if a.size == 0:
        raise ValueError(f"zero-size array to reduction operation {op}imum which has no identity")
    if a.dtype == np.bool_:
        return astype(_extreme(op, astype(a, np.int64), axis, keepdims), np.bool_)
    return CudaArray(K.reduce(op, a._d, _axes(axis, a.ndim), bool(keepdims)))


def amax(a, axis=None, keepdims=False) -> CudaArray:
    return _extreme("max", a, axis, keepdims)


def amin(a, axis=None, keepdims=False) -> CudaArray:
    return _extreme("min", a, axis, keepdims)


def any_(a, axis=None, keepdims=False) -> CudaArray:
    a = _dev(a)
    if a.size == 0:
        return full(_reduced_shape(a.shape, axis, keepdims), False, np.bool_)
    nz = astype(a if a.dtype == np.bool_ else _binary("ne", a, 0), np.int64)
    return _binary("gt", CudaArray(K.reduce("max", nz._d, _axes(axis, a.ndim), bool(keepdims))), 0)


def all_(a, axis=None, keepdims=False) -> CudaArray:
    a = _dev(a)
    if a.size == 0:
        return full(_reduced_shape(a.shape, axis, keepdims), True, np.bool_)
    nz = astype(a if a.dtype == np.bool_ else _binary("ne", a, 0), np.int64)
    return _binary("gt", CudaArray(K.reduce("min", nz._d, _axes(axis, a.ndim), bool(keepdims))), 0)


def _reduced_shape(shape, axis, keepdims):
    axes = _axes(axis, len(shape))
    axes = range(len(shape)) if axes is None else axes
    return tuple(1 if i in axes else n for i, n in enumerate(shape)) if keepdims else tuple(
        n for i, n in enumerate(shape) if i not in axes)


def argmax(a, axis=None, keepdims=False) -> CudaArray:
    a = _dev(a)
    if a.size == 0:
        raise ValueError("attempt to get argmax of an empty sequence")
    if axis is None:
        r = CudaArray(K.argmax(a.reshape(-1)._d, 0, False))
        return r.reshape((1,) * a.ndim) if keepdims else r
    return CudaArray(K.argmax(a._d, int(axis) % max(a.ndim, 1), bool(keepdims)))


def argmin(a, axis=None, keepdims=False) -> CudaArray:
    a = _dev(a)
    neg = logical_not(a) if a.dtype == np.bool_ else -(astype(a, np.float64) if a.dtype.kind in "iu" else a)
    return argmax(neg, axis, keepdims)


# ---------------------------------------------------------------- shape
def reshape(a, shape) -> CudaArray:
    return _dev(a).reshape(shape)


def transpose(a, axes=None) -> CudaArray:
    return _dev(a).transpose(axes)


def broadcast_to(a, shape) -> CudaArray:
    a = _dev(a)
    shape = _shape_arg(shape)
    if len(shape) < a.ndim:
        raise ValueError(f"cannot broadcast shape {a.shape} to {shape}")
    st = broadcast_strides(a.shape, a._st, shape)
    return a._v(0, shape, st)


def moveaxis(a, source, destination) -> CudaArray:
    a = _dev(a)
    nd = a.ndim
    src = [s % nd for s in ((source,) if isinstance(source, int) else source)]
    dst = [d % nd for d in ((destination,) if isinstance(destination, int) else destination)]
    order = [i for i in range(nd) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return a.transpose(order)


def concatenate(arrays, axis=0) -> CudaArray:
    arrays = [_dev(x) for x in arrays]
    if not arrays:
        raise ValueError("need at least one array to concatenate")
    nd = arrays[0].ndim
    if nd == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    axis = int(axis) % nd
    ref = arrays[0].shape
    for x in arrays:
        if x.ndim != nd or any(x.shape[i] != ref[i] for i in range(nd) if i != axis):
            raise ValueError("all the input array dimensions except for the concatenation axis must match")
    dtype = np.result_type(*[x.dtype for x in arrays])
    shape = list(ref)
    shape[axis] = int(np.sum([x.shape[axis] for x in arrays]))
    out = CudaArray(cuda.device_array(tuple(shape), dtype=dtype))
    cst = out._st
    start = 0
    for x in arrays:
        if x.size:
            KA.copy_into(_view(out._d, start * cst[axis], x.shape, cst), x._d)
        start += x.shape[axis]
    return out


def split_at(a, indices_or_sections, axis=0) -> list:
    a = _dev(a)
    axis = int(axis) % a.ndim
    n = a.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if n % k:
            raise ValueError("array split does not result in an equal division")
        cuts = [n // k * i for i in range(1, k)]
    else:
        cuts = list(indices_or_sections)
    bounds = [0] + cuts + [n]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sl = [slice(None)] * a.ndim
        sl[axis] = slice(lo, hi)
        out.append(a[tuple(sl)])
    return out


def sum_to(g, shape) -> CudaArray:
    return _sum_to(g, tuple(shape))


# ---------------------------------------------------------------- indexing
def _index_plan(a: CudaArray, idx):
    """Split ``a[idx]`` into (offset, kept dims) and, if there are index arrays, the
    linear-offset array. Returns ``("view", off, shape, strides)`` or
    ``("adv", lin, out_shape, x_strides, lin_strides)`` (see kernels/cuda/array.py)."""
    items = list(idx) if isinstance(idx, tuple) else [idx]
    conv = []
    for it in items:
        if isinstance(it, list):
            it = np.asarray(it)
        if isinstance(it, np.ndarray) and it.ndim == 0 and it.dtype.kind in "iu":
            it = int(it)
        if isinstance(it, (np.ndarray, CudaArray)):
            if it.dtype == np.bool_:
                host = to_numpy(it)  # data-dependent size: a documented host read
                conv.extend(("arr", x.astype(np.int64)) for x in np.nonzero(host))
                continue
            if it.dtype.kind not in "iu":
                raise IndexError("arrays used as indices must be of integer (or boolean) type")
            conv.append(("arr", it))
        elif it is None:
            conv.append(("new",))
        elif it is Ellipsis:
            conv.append(("ell",))
        elif isinstance(it, slice):
            conv.append(("slice", it))
        elif isinstance(it, (int, np.integer)) and not isinstance(it, (bool, np.bool_)):
            conv.append(("int", int(it)))
        else:
            raise IndexError("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and "
                             "integer or boolean arrays are valid indices")
    ncons = sum(1 for c in conv if c[0] in ("arr", "slice", "int"))
    nell = sum(1 for c in conv if c[0] == "ell")
    if nell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ncons > a.ndim:
        raise IndexError(f"too many indices for array: array is {a.ndim}-dimensional, but {ncons} were indexed")
    fill = [("slice", slice(None))] * (a.ndim - ncons)
    if nell:
        k = [c[0] for c in conv].index("ell")
        conv = conv[:k] + fill + conv[k + 1:]
    else:
        conv = conv + fill
    has_arr = any(c[0] == "arr" for c in conv)
    off, dim, slots = 0, 0, []
    for c in conv:
        if c[0] == "new":
            slots.append(("basic", 1, 0))
            continue
        n, s = a.shape[dim], a._st[dim]
        if c[0] == "slice":
            start, stop, step = c[1].indices(n)
            if step < 0:
                raise NotImplementedError("negative-step slices are not supported on cuda")
            ln = max(0, -(-(stop - start) // step))
            if ln:
                off += start * s
            slots.append(("basic", ln, s * step))
        elif c[0] == "int":
            i = c[1]
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {dim} with size {n}")
            off += (i % n) * s
            if has_arr:
                slots.append(("adv", None, n, s))
        else:
            arr = c[1]
            if isinstance(arr, np.ndarray):
                if arr.size and (arr.min() < -n or arr.max() >= n):
                    raise IndexError(f"index {int(arr.max() if arr.max() >= n else arr.min())} is out of bounds "
                                     f"for axis {dim} with size {n}")
                arr = from_numpy(arr.astype(np.int64, copy=False))
            slots.append(("adv", arr, n, s))
        dim += 1
    if not has_arr:
        return ("view", off, [sl[1] for sl in slots], [sl[2] for sl in slots])
    advpos = [k for k, sl in enumerate(slots) if sl[0] == "adv"]
    arrays = [sl for sl in slots if sl[0] == "adv" and sl[1] is not None]
    try:
        bshape = np.broadcast_shapes(*[x[1].shape for x in arrays])
    except ValueError:
        raise IndexError("shape mismatch: indexing arrays could not be broadcast together with shapes "
                         + " ".join(str(x[1].shape) for x in arrays)) from None
    adjacent = advpos == list(range(advpos[0], advpos[-1] + 1))
    basic = [(sl[1], sl[2]) for sl in slots if sl[0] == "basic"]
    nb = sum(1 for k, sl in enumerate(slots) if sl[0] == "basic" and k < advpos[0]) if adjacent else 0
    out_shape = [b[0] for b in basic[:nb]] + list(bshape) + [b[0] for b in basic[nb:]]
    if len(out_shape) > MAX_DIMS:
        raise NotImplementedError(f"indexing results of more than {MAX_DIMS} dims are not supported on cuda")
    xs = [b[1] for b in basic[:nb]] + [0] * len(bshape) + [b[1] for b in basic[nb:]]
    ls = [0] * nb + list(_c_strides(bshape)) + [0] * (len(basic) - nb)
    lin = KA.full(bshape, off, np.int64)
    for _, arr, n, s in arrays:
        KA.index_linear(lin, arr._d, n, s)
    return ("adv", lin, out_shape, xs, ls)


def _flat_all(a: CudaArray):
    """A 1-D device array over all of ``a``'s memory (from its first element)."""
    return _view(a._d, 0, (a._span(),), (1,))


def _getitem(a: CudaArray, idx) -> CudaArray:
    plan = _index_plan(a, idx)
    if plan[0] == "view":
        return a._v(plan[1], plan[2], plan[3])
    _, lin, shape, xs, ls = plan
    if a.size == 0 or _n(shape) == 0:
        return CudaArray(cuda.device_array(tuple(shape), dtype=a.dtype))
    return CudaArray(KA.gather(_flat_all(a), lin, shape, xs, ls, a.dtype))


def _value(v, dtype):
    v = _norm_scalar(v)
    if isinstance(v, CudaArray):
        return v._d if v.dtype == dtype else astype(v, dtype)._d
    if isinstance(v, _Scalar):
        return _const(v, dtype)
    return from_numpy(np.asarray(v, dtype=dtype))._d


def _setitem(a: CudaArray, idx, value) -> None:
    plan = _index_plan(a, idx)
    if plan[0] == "view":
        dst = a._v(plan[1], plan[2], plan[3])
        if dst.size:
            KA.copy_into(dst._d, _value(value, a.dtype))
        return
    _, lin, shape, xs, ls = plan
    if _n(shape):
        KA.scatter(_flat_all(a), _value(value, a.dtype), lin, shape, xs, ls, accumulate=False)


def add_at(a: CudaArray, idx, b) -> None:
    """``np.add.at(a, idx, b)`` in place: repeated indices accumulate (atomic adds)."""
    plan = _index_plan(a, idx)
    if plan[0] == "view":
        dst = a._v(plan[1], plan[2], plan[3])
        if dst.size:
            r = _binary("add", dst, b)
            KA.copy_into(dst._d, r._d)
        return
    _, lin, shape, xs, ls = plan
    if _n(shape):
        KA.scatter(_flat_all(a), _value(b, a.dtype), lin, shape, xs, ls, accumulate=True)


# ---------------------------------------------------------------- linear algebra
def matmul(a, b) -> CudaArray:
    a, b = _dev(a), _dev(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: Input operand does not have enough dimensions")
    A = a.reshape(1, -1) if a.ndim == 1 else a
    B = b.reshape(-1, 1) if b.ndim == 1 else b
    if A.shape[-1] != B.shape[-2]:
        raise ValueError(f"matmul: mismatch in core dimension ({A.shape} @ {B.shape})")
    np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    c = CudaArray(K.matmul(A._d, B._d))
    if a.ndim == 1 and b.ndim == 1:
        return c.reshape(())
    if a.ndim == 1:
        return c.reshape(c.shape[:-2] + c.shape[-1:])
    if b.ndim == 1:
        return c.reshape(c.shape[:-1])
    return c


# ---------------------------------------------------------------- fused kernels
def _u(x):
    return None if x is None else _dev(x)._d


def _w(d):
    return None if d is None else CudaArray(d)


def softmax_forward(x):
    return _w(K.softmax_forward(_u(x)))


def softmax_backward(y, dy):
    return _w(K.softmax_backward(_u(y), _u(dy)))


def log_softmax_forward(x):
    return _w(K.log_softmax_forward(_u(x)))


def log_softmax_backward(y, dy):
    return _w(K.log_softmax_backward(_u(y), _u(dy)))


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    loss, lse = K.cross_entropy_forward(_u(logits), _u(target), ignore_index, label_smoothing)
    return _w(loss), _w(lse)


def cross_entropy_backward(logits, target, lse, dloss, ignore_index, label_smoothing):
    return _w(K.cross_entropy_backward(_u(logits), _u(target), _u(lse), _u(ascontiguousarray(dloss)),
                                       ignore_index, label_smoothing))


def layer_norm_forward(x, weight, bias, eps):
    return tuple(_w(r) for r in K.layer_norm_forward(_u(x), _u(weight), _u(bias), eps))


def layer_norm_backward(dy, x, weight, mean, rstd):
    return tuple(_w(r) for r in K.layer_norm_backward(_u(dy), _u(x), _u(weight), _u(mean), _u(rstd)))


def attention_forward(q, k, v, bias, is_causal, scale):
    o, lse = K.attention_forward(_u(q), _u(k), _u(v), _u(bias), is_causal, scale)
    return _w(o), _w(lse)


def attention_backward(q, k, v, o, lse, do, bias, is_causal, scale):
    return tuple(_w(r) for r in K.attention_backward(_u(q), _u(k), _u(v), _u(o), _u(lse), _u(do), _u(bias),
                                                      is_causal, scale))


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    K.adam_step(_u(param), _u(grad), _u(exp_avg), _u(exp_avg_sq), lr, beta1, beta2, eps, weight_decay,
                step, decoupled)


def dropout_mask(shape, p, seed, dtype):
    """CUDA only: the inverted-dropout multiplier (0 or 1/(1-p)) from a counter-based hash of
    (seed, element index); see kernels/cuda/array.py."""
    return _w(KA.dropout_mask(_shape_arg(shape), p, seed, np.dtype(dtype)))


# ---------------------------------------------------------------- the namespace
class CUDABackend:
    """Primitive array functions on a CUDA device (arrays are ``CudaArray``); the same names
    and semantics as ``CPUBackend`` (plus ``dropout_mask``)."""

    name = "cuda"
    ndarray = CudaArray

    asarray = staticmethod(asarray)
    ascontiguousarray = staticmethod(ascontiguousarray)
    zeros = staticmethod(zeros)
    ones = staticmethod(ones)
    full = staticmethod(full)
    empty = staticmethod(empty)
    arange = staticmethod(arange)
    zeros_like = staticmethod(zeros_like)
    ones_like = staticmethod(ones_like)
    to_numpy = staticmethod(to_numpy)
    from_numpy = staticmethod(from_numpy)

    exp = staticmethod(lambda x: _unary("exp", x))
    log = staticmethod(lambda x: _unary("log", x))
    sqrt = staticmethod(lambda x: _unary("sqrt", x))
    abs = staticmethod(lambda x: _unary("abs", x))
    tanh = staticmethod(lambda x: _unary("tanh", x))
    sign = staticmethod(lambda x: _unary("sign", x))
    maximum = staticmethod(maximum)
    minimum = staticmethod(minimum)
    where = staticmethod(where)
    clip = staticmethod(clip)
    power = staticmethod(power)
    isfinite = staticmethod(isfinite)
    logical_not = staticmethod(logical_not)
    errstate = staticmethod(errstate)

    sum = staticmethod(sum_)
    max = staticmethod(amax)
    min = staticmethod(amin)
    argmax = staticmethod(argmax)
    argmin = staticmethod(argmin)
    any = staticmethod(any_)
    all = staticmethod(all_)
    sum_to = staticmethod(sum_to)

    reshape = staticmethod(reshape)
    transpose = staticmethod(transpose)
    broadcast_to = staticmethod(broadcast_to)
    broadcast_shapes = staticmethod(np.broadcast_shapes)
    concatenate = staticmethod(concatenate)
    split_at = staticmethod(split_at)
    moveaxis = staticmethod(moveaxis)
    add_at = staticmethod(add_at)
    copy = staticmethod(copy)

    matmul = staticmethod(matmul)
    sigmoid = staticmethod(sigmoid)

    softmax_forward = staticmethod(softmax_forward)
    softmax_backward = staticmethod(softmax_backward)
    log_softmax_forward = staticmethod(log_softmax_forward)
    log_softmax_backward = staticmethod(log_softmax_backward)
    cross_entropy_forward = staticmethod(cross_entropy_forward)
    cross_entropy_backward = staticmethod(cross_entropy_backward)
    layer_norm_forward = staticmethod(layer_norm_forward)
    layer_norm_backward = staticmethod(layer_norm_backward)
    attention_forward = staticmethod(attention_forward)
    attention_backward = staticmethod(attention_backward)
    adam_step = staticmethod(adam_step)
    dropout_mask = staticmethod(dropout_mask)
