"""The CUDA backend's device memory: a caching pool behind numba-cuda's External Memory
Management (EMM) plugin interface.

Numba's default manager calls ``cuMemAlloc`` for every device array and frees with a
deferred ``cuMemFree`` whose flush synchronises the device every few frees. Through
``PoolMemoryManager`` every ``cuda.device_array`` of the process takes a block from
``kernels/cuda/_util.CachingPool`` instead: a freed array's block goes back to the free list
of its size class and serves the next request of that class, so a training step that repeats
the previous step's shapes allocates nothing from the driver, frees nothing and never waits.
Blocks are kept until ``empty_cache()``.

Installed when the backend is first imported on a real GPU (not in the simulator, which
keeps the same books in ``_util.device_array``), unless ``MINITRANS_CUDA_POOL=0``; a CUDA
context that numba created before that keeps numba's own manager.
"""
from __future__ import annotations

import os
import weakref

from numba import cuda

from ...kernels.cuda._util import CachingPool, simulated, simulator_pool

_installed = False


def _manager_class():
    # the driver's classes, imported only on a real GPU (the simulator has no driver)
    from numba.cuda.cudadrv.driver import MemoryPointer, NumbaCUDAMemoryManager

    class PoolMemoryManager(NumbaCUDAMemoryManager):
        """numba's manager with a ``CachingPool`` in front of its driver allocations."""

        def initialize(self):
            super().initialize()
            self.pool = CachingPool(self._driver_alloc)

        def _driver_alloc(self, cap):
            try:
                return NumbaCUDAMemoryManager.memalloc(self, cap)
            except Exception:  # out of memory: give the cached blocks back and try once more
                self.pool.release_all()
                self.deallocations.clear()
                return NumbaCUDAMemoryManager.memalloc(self, cap)

        def memalloc(self, size):
            cap, block = self.pool.alloc(size)
            release = self.pool.release
            # the block (numba's own pointer) lives on in the pool; ours returns it there when freed
            return MemoryPointer(weakref.proxy(self.context), block.device_pointer, size,
                                 finalizer=lambda: release(cap, block))

        def empty_cache(self):
            self.pool.release_all()

    return PoolMemoryManager


def install() -> bool:
    """Route numba-cuda's device allocations through the pool (once; a GPU only)."""
    global _installed
    if _installed or simulated() or os.environ.get("MINITRANS_CUDA_POOL", "1") == "0":
        return _installed
    cuda.set_memory_manager(_manager_class())
    _installed = True
    return True


def empty_cache() -> None:
    """Drop the cached free blocks (their memory goes back to the driver when numba frees it)."""
    if simulated():
        simulator_pool.release_all()
        return

    mgr = cuda.current_context().memory_manager
    if hasattr(mgr, "empty_cache"):
        mgr.empty_cache()
