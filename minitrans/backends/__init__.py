"""Array backends, one per device type. Ops call these primitives and never NumPy/Numba directly.

The contract every backend implements, one docstring per primitive, is ``protocol.Backend``;
``cpu.CPUBackend`` and ``cuda.CUDABackend`` subclass it. ``set_kernels`` chooses, for every
backend at once, between the compiled fused kernels and the NumPy reference.
"""
from __future__ import annotations

import os

_BACKENDS: dict = {}
_KERNELS = {"name": os.environ.get("MINITRANS_KERNELS", "numba")}


def set_kernels(name: str) -> None:
    """Run the fused ops (softmax, cross-entropy, layer norm, attention, Adam) with ``"numba"``
    (each device's compiled kernels, the default) or ``"reference"`` (the plain NumPy oracle of
    ``minitrans.kernels.reference``), on every device. ``MINITRANS_KERNELS`` sets the default."""
    if name not in ("numba", "reference"):
        raise ValueError(f"set_kernels: expected 'numba' or 'reference', got {name!r}")
    _KERNELS["name"] = name
    for b in _BACKENDS.values():
        b.set_kernels(name)


def get_kernels() -> str:
    """The choice made by ``set_kernels``."""
    return _KERNELS["name"]


def get_backend(kind: str):
    b = _BACKENDS.get(kind)
    if b is None:
        if kind == "cpu":
            from .cpu import CPUBackend as b
        elif kind == "cuda":
            from ..cuda import check_usable

            check_usable()  # a one-line error: numba-cuda missing, or no GPU
            from .cuda import CUDABackend as b
        else:  # pragma: no cover - device() already validates
            raise RuntimeError(f"no backend for device type {kind!r}")
        if b.get_kernels() != _KERNELS["name"]:
            b.set_kernels(_KERNELS["name"])
        _BACKENDS[kind] = b
    return b
