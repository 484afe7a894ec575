"""The global random generator: ``manual_seed``, ``randn``, ``rand``, ``randint`` and friends.

All random numbers come from one NumPy ``Generator`` (PCG64) on the host, so a seed fixes
every draw on every device; ``get_rng_state``/``set_rng_state`` make resumed runs exact.
"""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._creation import from_host_array, numpy_dtype_or_default, shape_from_args
from ._tensor_core import TensorBase

_GEN = {"g": np.random.default_rng(0)}


def manual_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed expects an int, got {type(seed).__name__}")
    _GEN["g"] = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    return _GEN["g"]


def get_rng_state() -> dict:
    return _GEN["g"].bit_generator.state


def set_rng_state(state: dict) -> None:
    g = np.random.default_rng()
    g.bit_generator.state = state
    _GEN["g"] = g


def randn(*size, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    d = numpy_dtype_or_default(dtype)
    if d.kind != "f":
        raise TypeError(f"randn: dtype must be floating point, got {_dtype.from_numpy_dtype(d)}")
    return from_host_array(_GEN["g"].standard_normal(shape_from_args(size), dtype=d), None, device, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    d = numpy_dtype_or_default(dtype)
    if d.kind != "f":
        raise TypeError(f"rand: dtype must be floating point, got {_dtype.from_numpy_dtype(d)}")
    return from_host_array(_GEN["g"].random(shape_from_args(size), dtype=d), None, device, requires_grad)


def randint(low: int, high=None, size=(), dtype=None, device=None) -> TensorBase:
    """Integers in [low, high); ``randint(high, size)`` and ``randint(low, high, size)`` as in PyTorch."""
    if isinstance(high, (tuple, list)):          # randint(high, size)
        low, high, size = 0, low, high
    elif high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    arr = _GEN["g"].integers(low, high, size=shape_from_args((tuple(size),)), dtype=np.int64)
    return from_host_array(arr, dtype or _dtype.int64, device, False)


def randperm(n: int, dtype=None, device=None) -> TensorBase:
    return from_host_array(_GEN["g"].permutation(n).astype(np.int64), dtype or _dtype.int64, device, False)


def randn_like(t: TensorBase, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return randn(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def rand_like(t: TensorBase, dtype=None, device=None, requires_grad: bool = False) -> TensorBase:
    return rand(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randint_like(t: TensorBase, low: int, high: int | None = None, dtype=None, device=None) -> TensorBase:
    return randint(low, high, t.shape, dtype=dtype or t.dtype, device=device or t.device)
