"""Small tiles for Numba's CUDA simulator.

The simulator runs one Python thread per CUDA thread (about 1-2 ms each), so code that runs
the CUDA kernels there — the CUDA tests and ``experiments/cuda_step_cost.py`` — shrinks the
tiles and thread counts (the UPPER_CASE constants each kernel module reads at call time)
while it runs. A real GPU keeps the production tiles.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import traceback

import numpy as np
from numba.core import types
from numba.np import numpy_support

# The simulator polls its Python threads from the launching one: at the default 5 ms GIL switch
# interval each hand-over waits out a slice (a small training step: 29 s; at 50 µs: 1.5 s).
SWITCH_INTERVAL = 5e-5

SIM_TILES = {  # module of minitrans.kernels.cuda -> {constant: value under the simulator}
    "elementwise": dict(THREADS=4, MAX_BLOCKS=2), "array": dict(THREADS=4, MAX_BLOCKS=2),
    "adam": dict(THREADS=4, MAX_BLOCKS=2),
    "reduce": dict(THREADS=2), "softmax": dict(THREADS=2), "cross_entropy": dict(THREADS=2),
    "layer_norm": dict(THREADS=2, COL_THREADS=4),
    "matmul": dict(TILE_M=8, TILE_N=8, TILE_K=4, MICRO_M=4, MICRO_N=4),
    "attention": dict(BLOCK_Q=4, BLOCK_K=4, ROWDOT_THREADS=4), "clip": dict(THREADS=4),
    "index_range": dict(THREADS=4), "indexed": dict(THREADS=4, MAX_BLOCKS=2),
}


_SHARED_LOCK = threading.Lock()


def _shared_array(self, shape, dtype, alignment=None):
    """The simulator's ``cuda.shared.array`` with its first-allocation check under a lock.

    The simulator keys a block's shared arrays by the calling source line and creates one on
    the first call without a lock: when two of its threads get there in the same instant (likely
    at a short switch interval) each makes its own array, and the block's "shared" memory is
    silently split. Same keying, same results, made atomic."""
    if shape == 0 or alignment is not None:  # dynamic shared memory, or the simulator's own error
        return _SIMULATOR_SHARED_ARRAY(self, shape, dtype, alignment)
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    caller = traceback.extract_stack(sys._getframe())[-2][0:2]
    with _SHARED_LOCK:
        res = self._allocations.get(caller)
        if res is None:
            res = self._allocations[caller] = np.empty(shape, dtype)
    return res


_SIMULATOR_SHARED_ARRAY = None


def make_shared_arrays_thread_safe() -> None:
    """Replace the simulator's shared-array allocation by ``_shared_array`` (idempotent; only
    under the simulator, where numba's simulator modules exist)."""
    global _SIMULATOR_SHARED_ARRAY
    from numba.cuda.simulator.kernelapi import FakeCUDAShared  # lazy: only the simulator has it

    if FakeCUDAShared.array is not _shared_array:
        _SIMULATOR_SHARED_ARRAY = FakeCUDAShared.array
        FakeCUDAShared.array = _shared_array


@contextlib.contextmanager
def small_tiles():
    """Set the ``SIM_TILES`` constants (and a short GIL switch interval) for the body of the ``with``
    and restore the old values after it."""
    mods = {m: importlib.import_module(f"minitrans.kernels.cuda.{m}") for m in SIM_TILES}
    make_shared_arrays_thread_safe()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
    saved = {m: {k: getattr(mods[m], k) for k in kv} for m, kv in SIM_TILES.items()}
    for m, kv in SIM_TILES.items():
        for k, v in kv.items():
            setattr(mods[m], k, v)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)
        for m, kv in saved.items():
            for k, v in kv.items():
                setattr(mods[m], k, v)
