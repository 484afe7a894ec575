"""``minitrans.cuda``: is a CUDA device usable, how many, and wait for it.

``is_available()`` is True when numba-cuda finds a real GPU and driver, **or** when
Numba's CUDA simulator is enabled (``NUMBA_ENABLE_CUDASIM=1`` set before numba is first
imported): the simulator runs the same kernels on the CPU, one Python thread per CUDA
thread, so ``device="cuda"`` works (slowly, for tiny shapes) in tests without a GPU.
``is_simulated()`` tells the two apart.

numba-cuda is an optional dependency, so ``numba`` (whose configuration fixes the simulator
switch when first imported), ``numba.cuda`` and the CUDA kernels are imported inside the
functions that need them: importing ``minitrans.cuda`` imports none of them.
"""
from __future__ import annotations

import importlib.util

INSTALL_HINT = "pip install 'minitrans[cuda]'"


def has_numba_cuda() -> bool:
    """True when the ``numba-cuda`` package (the CUDA backend's only extra dependency) is
    installed. Numba's own deprecated built-in ``numba.cuda`` does not count: the kernels
    are written and pinned against numba-cuda."""
    return importlib.util.find_spec("numba_cuda") is not None


def check_usable() -> None:
    """Raise a one-line ``RuntimeError`` saying why device ``cuda`` cannot be used, if it cannot."""
    if not has_numba_cuda():
        raise RuntimeError(f"device 'cuda' needs the numba-cuda package, which is not installed: "
                           f"{INSTALL_HINT}")
    if not is_available():
        raise RuntimeError("CUDA is not available: no NVIDIA driver/GPU was found. Use device 'cpu', or "
                           "set NUMBA_ENABLE_CUDASIM=1 before importing minitrans to run the CUDA backend "
                           "in Numba's simulator")


def is_simulated() -> bool:
    """True when numba's CUDA simulator stands in for a GPU."""
    from numba import config  # imported on use (see the module docstring)

    return bool(config.ENABLE_CUDASIM)


def is_available() -> bool:
    """True for a real GPU, or under the CUDA simulator (see the module docstring); False
    without numba-cuda installed."""
    if not has_numba_cuda():
        return False
    if is_simulated():
        return True
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - no driver / broken install
        return False


def device_count() -> int:
    """Number of visible CUDA devices (1 under the simulator, 0 without any)."""
    if is_simulated():
        return 1
    if not is_available():
        return 0
    from numba import cuda

    return len(cuda.gpus)


def synchronize() -> None:
    """Block until every kernel queued on the current device has finished; raise the error of any
    index-range check that failed meanwhile (see minitrans/backends/cuda/pending_checks.py)."""
    if not is_available():
        raise RuntimeError("minitrans.cuda.synchronize: no CUDA device is available")
    from numba import cuda

    from ..kernels.cuda._util import counters

    counters.syncs += 1
    cuda.synchronize()
    # Like torch.cuda.synchronize surfacing a device-side assert: an index check queued on the
    # device raises here if it failed (lazy: the module compiles CUDA kernels on first use).
    from ..backends.cuda.pending_checks import PENDING

    PENDING.raise_first_violation()


__all__ = ["check_usable", "has_numba_cuda", "is_available", "is_simulated", "device_count", "synchronize"]
