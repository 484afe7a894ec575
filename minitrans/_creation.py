"""Functions that make new tensors from data or sizes: ``tensor``, ``zeros``, ``arange``, ``full_like`` ...

Each builds a host NumPy array, casts it to the requested dtype and hands it to the device's
backend (``from_numpy``), so every device gets the same values.
"""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._tensor_core import TensorBase
from .device import CPU, as_device


def _check_requires_grad(arr, requires_grad: bool) -> None:
    if requires_grad and arr.dtype.kind != "f":
        raise RuntimeError(
            f"only floating-point tensors can require gradients, got dtype {_dtype.from_numpy_dtype(arr.dtype)}")


def from_host_array(arr: np.ndarray, dtype, device, requires_grad: bool) -> TensorBase:
    """A tensor holding the host array ``arr`` (which the caller gives up: it may be used
    without a copy), cast to ``dtype`` (or to the minitrans dtype storing ``arr``'s) on ``device``."""
    if dtype is not None:
        arr = arr.astype(_dtype.as_dtype(dtype).np, copy=False)
    else:
        arr = arr.astype(_dtype.from_numpy_dtype(arr.dtype).np, copy=False)
    _check_requires_grad(arr, requires_grad)
    dev = as_device(device)
    return TensorBase._wrap(dev.backend.from_numpy(arr), dev, bool(requires_grad))


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    """A new tensor holding a copy of ``data`` (nested lists, scalars, NumPy arrays or a Tensor)."""
    if isinstance(data, TensorBase):
        arr = np.array(data.numpy())
    elif isinstance(data, np.ndarray):
        arr = np.array(data)
    else:
        try:
            arr = np.array(data)
        except ValueError as e:
            raise ValueError(f"tensor(): could not build an array from the data given ({e})") from None
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)  # Python floats become the default dtype, as in PyTorch
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"tensor(): unsupported data of NumPy dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.dtype not in (np.float32, np.float64) and dtype is None:
        arr = arr.astype(np.float32)
    return from_host_array(arr, dtype, device, requires_grad)


def from_numpy(arr: np.ndarray) -> TensorBase:
    """A CPU tensor sharing memory with ``arr`` (float32, float64, int64 or bool)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy expects an np.ndarray, got {type(arr).__name__}")
    _dtype.as_dtype(arr.dtype)
    return TensorBase._wrap(arr, CPU)


def shape_from_args(size) -> tuple:
    """The sizes given as ``f(2, 3)`` or ``f((2, 3))``, checked to be non-negative ints."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"sizes must be non-negative integers, got {tuple(size)}")
    return tuple(int(s) for s in size)


def numpy_dtype_or_default(dtype) -> np.dtype:
    """The NumPy dtype of ``dtype``, float32 when None."""
    return (_dtype.float32 if dtype is None else _dtype.as_dtype(dtype)).np


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return from_host_array(np.zeros(shape_from_args(size), numpy_dtype_or_default(dtype)), None, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return from_host_array(np.ones(shape_from_args(size), numpy_dtype_or_default(dtype)), None, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    if isinstance(fill_value, TensorBase) and fill_value.numel() == 1:
        fill_value = fill_value.item()
    if not isinstance(fill_value, (bool, int, float, np.bool_, np.integer, np.floating)):
        raise TypeError(f"full: fill_value must be a number or bool, got {type(fill_value).__name__}")
    if dtype is None:
        dtype = _dtype.bool_ if isinstance(fill_value, bool) else (
            _dtype.int64 if isinstance(fill_value, (int, np.integer)) else _dtype.float32)
    shape = shape_from_args((size,) if isinstance(size, int) else (tuple(size),))
    return from_host_array(np.full(shape, fill_value, _dtype.as_dtype(dtype).np), None, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    arr = np.arange(start, end, step)
    if dtype is None:
        dtype = _dtype.int64 if arr.dtype.kind in "iu" else _dtype.float32
    return from_host_array(arr, dtype, device, requires_grad)


def linspace(start, end, steps: int, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return from_host_array(np.linspace(start, end, steps), dtype or _dtype.float32, device, requires_grad)


def zeros_like(t: TensorBase, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return zeros(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t: TensorBase, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return ones(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t: TensorBase, fill_value, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def empty_like(t: TensorBase, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return zeros_like(t, dtype, device, requires_grad)
