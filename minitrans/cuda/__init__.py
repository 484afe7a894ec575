"""``minitrans.cuda``: is a CUDA device usable, how many, and wait for it.

``is_available()`` is True when numba-cuda finds a real GPU and driver, **or** when
Numba's CUDA simulator is enabled (``NUMBA_ENABLE_CUDASIM=1`` set before numba is first
imported): the simulator runs the same kernels on the CPU, one Python thread per CUDA
thread, so ``device="cuda"`` works (slowly, for tiny shapes) in tests without a GPU.
``is_simulated()`` tells the two apart.
"""
from __future__ import annotations


def is_simulated() -> bool:
    """True when numba's CUDA simulator stands in for a GPU."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def is_available() -> bool:
    """True for a real GPU, or under the CUDA simulator (see the module docstring)."""
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
    """Block until every kernel queued on the current device has finished."""
    if not is_available():
        raise RuntimeError("minitrans.cuda.synchronize: no CUDA device is available")
    from numba import cuda

    cuda.synchronize()


__all__ = ["is_available", "is_simulated", "device_count", "synchronize"]
