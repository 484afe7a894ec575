"""Array backends, one per device type. Ops call these primitives and never NumPy/Numba directly.

The contract every backend implements, one docstring per primitive, is ``protocol.Backend``;
``cpu.CPUBackend`` and ``cuda.CUDABackend`` subclass it.

The kernel choice lives here and only here: ``set_kernels`` picks, for every device at once,
between each device's compiled fused kernels (``"numba"``) and the NumPy reference
(``"reference"``), and tells every backend in use; a backend loaded later is told by
``get_backend``. ``MINITRANS_KERNELS`` in the environment sets the starting choice.

``minitrans.backends.cpu`` and ``.cuda`` are imported on first use (``get_backend``, or reading
the attribute): loading the CPU backend loads the Numba kernel modules, which ``import minitrans``
does not need to pay for.
"""
from __future__ import annotations

import importlib
import os

from .. import cuda as cuda_support   # imports no numba-cuda: only the checks of whether it can run

KERNEL_CHOICES = ("numba", "reference")

_BACKENDS: dict = {}
_KERNELS = {"name": os.environ.get("MINITRANS_KERNELS", "numba")}


def check_kernel_choice(name) -> str:
    """``name`` if it is one of KERNEL_CHOICES, else the ValueError every ``set_kernels`` raises."""
    if name not in KERNEL_CHOICES:
        raise ValueError(f"set_kernels: expected 'numba' or 'reference', got {name!r}")
    return name


def set_kernels(name: str) -> None:
    """Run the fused ops (softmax, cross-entropy, layer norm, attention, Adam) with ``"numba"``
    (each device's compiled kernels, the default) or ``"reference"`` (the plain NumPy oracle of
    ``minitrans.kernels.reference``), on every device. ``MINITRANS_KERNELS`` sets the default."""
    _KERNELS["name"] = check_kernel_choice(name)
    for backend in _BACKENDS.values():
        backend.set_kernels(name)


def get_kernels() -> str:
    """The choice made by ``set_kernels`` (or ``MINITRANS_KERNELS``)."""
    return _KERNELS["name"]


def get_backend(kind: str):
    """The backend class of device type ``kind`` (``"cpu"`` or ``"cuda"``), loaded on first use
    and told the current kernel choice."""
    backend = _BACKENDS.get(kind)
    if backend is None:
        if kind == "cpu":
            from .cpu import CPUBackend as backend          # loads the Numba kernel modules: on first use
        elif kind == "cuda":
            cuda_support.check_usable()  # a one-line error: numba-cuda missing, or no GPU
            from .cuda import CUDABackend as backend
        else:  # pragma: no cover - device() already validates
            raise RuntimeError(f"no backend for device type {kind!r}")
        if backend.get_kernels() != _KERNELS["name"]:
            backend.set_kernels(_KERNELS["name"])
        _BACKENDS[kind] = backend
    return backend


def __getattr__(name: str):
    """``minitrans.backends.cpu`` / ``.cuda`` without an explicit import (e.g. for
    ``mt.backends.cpu.retain_freed_memory()``), loaded on first access like ``get_backend`` does."""
    if name in ("cpu", "cuda"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
