"""Array backends, one per device. Ops call these primitives and never NumPy/Numba directly.

A backend is a namespace (see ``cpu.CPUBackend``) whose arrays support the Python
operators (``+ - * / ** < == ...``, ``a[idx]``, ``.shape``, ``.ndim``, ``.dtype``,
``.reshape``, ``.transpose``, ``.astype``) and which provides the functions listed in
``cpu.CPUBackend``. The CUDA backend mirrors the same names over device arrays.
"""
from __future__ import annotations

_BACKENDS: dict = {}


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
        _BACKENDS[kind] = b
    return b
