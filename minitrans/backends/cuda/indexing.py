"""Shape functions (views, ``concatenate``, ``split_at``, ``sum_to``) and indexing of the
CUDA backend: ``a[idx]`` / ``a[idx] = v`` / ``add_at`` / ``index_grad``. Basic indices give views; one
int64 index array is read in place by ``kernels/cuda/indexed.py`` (``take`` / ``put``: one
launch); several go through ``kernels/cuda/array.py`` (``index_linear`` into an offset array,
then ``gather`` / ``scatter``). A bool mask on the device is the one documented host read
(``np.nonzero``).
"""
from __future__ import annotations

import numpy as np

from ...kernels.cuda import array as array_kernels
from ...kernels.cuda import indexed as indexed_kernels
from ...kernels.cuda._util import MAX_DIMS, device_array, flat_view
from ...kernels.cuda.layout import (
    advanced_layout, basic_selection, broadcast_strides, element_count, index_slots, moveaxis_order,
)
from ..cpu import _sum_to
from .array import CudaArray, _Scalar, from_numpy, to_numpy
from .ops import _binary, _const, _as_cuda, _norm_scalar, _shape_arg, astype


# ---------------------------------------------------------------- shape
def reshape(a, shape) -> CudaArray:
    return _as_cuda(a).reshape(shape)


def transpose(a, axes=None) -> CudaArray:
    return _as_cuda(a).transpose(axes)


def broadcast_to(a, shape) -> CudaArray:
    a = _as_cuda(a)
    shape = _shape_arg(shape)
    if len(shape) < a.ndim:
        raise ValueError(f"cannot broadcast shape {a.shape} to {shape}")
    st = broadcast_strides(a.shape, a._elem_strides, shape)
    return a._view(0, shape, st)


def moveaxis(a, source, destination) -> CudaArray:
    a = _as_cuda(a)
    return a.transpose(moveaxis_order(a.ndim, source, destination))


def concatenate(arrays, axis=0) -> CudaArray:
    arrays = [_as_cuda(x) for x in arrays]
    if not arrays:
        raise ValueError("need at least one array to concatenate")
    nd = arrays[0].ndim
    if nd == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    axis = int(axis) % nd
    ref = arrays[0].shape
    for k, x in enumerate(arrays):   # NumPy's words, as on the CPU
        if x.ndim != nd:
            raise ValueError(f"all the input arrays must have same number of dimensions, but the array at index 0 "
                             f"has {nd} dimension(s) and the array at index {k} has {x.ndim} dimension(s)")
        for i in range(nd):
            if i != axis and x.shape[i] != ref[i]:
                raise ValueError(f"all the input array dimensions except for the concatenation axis must match "
                                 f"exactly, but along dimension {i}, the array at index 0 has size {ref[i]} and "
                                 f"the array at index {k} has size {x.shape[i]}")
    dtype = np.result_type(*[x.dtype for x in arrays])
    shape = list(ref)
    shape[axis] = int(np.sum([x.shape[axis] for x in arrays]))
    out = CudaArray(device_array(tuple(shape), dtype))
    cst = out._elem_strides
    start = 0
    for x in arrays:
        if x.size:
            array_kernels.copy_into(out._view(start * cst[axis], x.shape, cst)._device_array, x._device_array)
        start += x.shape[axis]
    return out


def split_at(a, indices_or_sections, axis=0) -> list:
    a = _as_cuda(a)
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
    ``("adv", lin, out_shape, x_strides, lin_strides)`` (see kernels/cuda/array.py), or for one
    int64 index array ``("take", (idx, axis size, axis stride, offset, out_shape, x_strides,
    idx_strides))`` (see kernels/cuda/indexed.py)."""
    classified = []  # the entries of idx, classified for layout.index_slots
    for it in (idx if isinstance(idx, tuple) else (idx,)):
        if isinstance(it, list):
            it = np.asarray(it)
        if isinstance(it, np.ndarray) and it.ndim == 0 and it.dtype.kind in "iu":
            it = int(it)
        if isinstance(it, (np.ndarray, CudaArray)):
            if it.dtype == np.bool_:
                host = to_numpy(it)  # data-dependent size: a documented host read
                classified.extend(("arr", x.astype(np.int64)) for x in np.nonzero(host))
                continue
            if it.dtype.kind not in "iu":
                raise IndexError("arrays used as indices must be of integer (or boolean) type")
            classified.append(("arr", it))
        elif it is None:
            classified.append(("new",))
        elif it is Ellipsis:
            classified.append(("ell",))
        elif isinstance(it, slice):
            classified.append(("slice", it))
        elif isinstance(it, (int, np.integer)) and not isinstance(it, (bool, np.bool_)):
            classified.append(("int", int(it)))
        else:
            raise IndexError("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and "
                             "integer or boolean arrays are valid indices")
    offset, slots = index_slots(a.shape, a._elem_strides, classified)
    if not any(sl[0] == "adv" for sl in slots):
        return ("view", offset, [sl[1] for sl in slots], [sl[2] for sl in slots])
    arrays = []
    for sl in slots:
        if sl[0] == "adv" and sl[1] is not None:
            _, arr, n, stride, axis = sl
            if isinstance(arr, np.ndarray):  # a host index array: checked here, then uploaded
                if arr.size and (arr.min() < -n or arr.max() >= n):
                    raise IndexError(f"index {int(arr.max() if arr.max() >= n else arr.min())} is out of bounds "
                                     f"for axis {axis} with size {n}")
                arr = from_numpy(arr.astype(np.int64, copy=False))
            arrays.append((arr, n, stride))
    try:
        bshape = np.broadcast_shapes(*[arr.shape for arr, _, _ in arrays])
    except ValueError:
        raise IndexError("shape mismatch: indexing arrays could not be broadcast together with shapes "
                         + " ".join(str(arr.shape) for arr, _, _ in arrays)) from None
    if len(arrays) == 1 and arrays[0][0].dtype == np.int64:
        # one index array (an embedding lookup): the kernels read it in place, no offset array
        arr, n, stride = arrays[0]
        out_shape, xs, idx_strides = advanced_layout(slots, arr.shape, arr._elem_strides)
        _check_rank(out_shape)
        return ("take", (arr._device_array, n, stride, offset, out_shape, xs, idx_strides))
    out_shape, xs, ls = advanced_layout(slots, bshape)
    _check_rank(out_shape)
    lin = array_kernels.full(bshape, offset, np.int64)
    for arr, n, stride in arrays:
        array_kernels.index_linear(lin, arr._device_array, n, stride)
    return ("adv", lin, out_shape, xs, ls)


def _check_rank(out_shape) -> None:
    if len(out_shape) > MAX_DIMS:
        raise NotImplementedError(f"indexing results of more than {MAX_DIMS} dims are not supported on cuda")


def _flat_all(a: CudaArray):
    """A 1-D device array over all of ``a``'s memory (from its first element)."""
    return flat_view(a._device_array)[0]


def _getitem(a: CudaArray, idx) -> CudaArray:
    plan = _index_plan(a, idx)
    if plan[0] == "view":
        return a._view(plan[1], plan[2], plan[3])
    if plan[0] == "take":
        shape = plan[1][4]
        if a.size == 0 or element_count(shape) == 0:
            return CudaArray(device_array(tuple(shape), a.dtype))
        return CudaArray(indexed_kernels.take(_flat_all(a), plan[1], a.dtype))
    _, lin, shape, xs, ls = plan
    if a.size == 0 or element_count(shape) == 0:
        return CudaArray(device_array(tuple(shape), a.dtype))
    return CudaArray(array_kernels.gather(_flat_all(a), lin, shape, xs, ls, a.dtype))


def _value(v, dtype):
    v = _norm_scalar(v)
    if isinstance(v, CudaArray):
        return v._device_array if v.dtype == dtype else astype(v, dtype)._device_array
    if isinstance(v, _Scalar):
        return _const(v, dtype)
    return from_numpy(np.asarray(v, dtype=dtype))._device_array


def _setitem(a: CudaArray, idx, value) -> None:
    plan = _index_plan(a, idx)
    if plan[0] == "view":
        dst = a._view(plan[1], plan[2], plan[3])
        if dst.size:
            array_kernels.copy_into(dst._device_array, _value(value, a.dtype))
        return
    if plan[0] == "take":
        indexed_kernels.put(_flat_all(a), plan[1], _value(value, a.dtype), accumulate=False)
        return
    _, lin, shape, xs, ls = plan
    if element_count(shape):
        array_kernels.scatter(_flat_all(a), _value(value, a.dtype), lin, shape, xs, ls, accumulate=False)


def add_at(a: CudaArray, idx, b) -> None:
    """``np.add.at(a, idx, b)`` in place: repeated indices accumulate (atomic adds)."""
    plan = _index_plan(a, idx)
    if plan[0] == "view":
        dst = a._view(plan[1], plan[2], plan[3])
        if dst.size:
            r = _binary("add", dst, b)
            array_kernels.copy_into(dst._device_array, r._device_array)
        return
    if plan[0] == "take":
        indexed_kernels.put(_flat_all(a), plan[1], _value(b, a.dtype), accumulate=True)
        return
    _, lin, shape, xs, ls = plan
    if element_count(shape):
        array_kernels.scatter(_flat_all(a), _value(b, a.dtype), lin, shape, xs, ls, accumulate=True)


def index_grad(shape, dtype, idx, g) -> CudaArray:
    """Zeros of ``shape`` with ``g`` placed at ``idx`` (summed over repeats): the gradient of
    ``a[idx]``. A basic index takes one launch (``indexed.index_pad``) instead of a fill and a
    strided copy."""
    dtype = np.dtype(dtype)
    shape = _shape_arg(shape)
    selection = basic_selection(shape, idx)
    if selection is None:
        out = CudaArray(array_kernels.full(shape, 0, dtype))
        add_at(out, idx, g)
        return out
    return CudaArray(indexed_kernels.index_pad(shape, dtype, _value(g, dtype), selection))
