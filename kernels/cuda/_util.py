"""Shared helpers for the CUDA kernels: device views (``strided_view``, ``flat_view``), index
metadata, block reductions, launch counting and the simulator's memory pool.

Shapes and strides travel to kernels as by-value ``int64`` tuples padded to ``MAX_DIMS``
(kernel parameters: no device allocation, no host->device copy), and every input as a
1-D view of its memory plus element strides, so broadcasting (stride 0) and
non-contiguous views (transposes, slices) need no copy.

Block reductions (``block_reduce``, ``block_sum``, ``row_max``) are tree reductions in a shared
array of ``nthreads`` slots; every thread of the block must call them (they synchronise).
"""
from __future__ import annotations

import functools
import math
import weakref

import numba
import numpy as np
from numba import config as numba_config
from numba import cuda

from .layout import element_count, span

MAX_DIMS = 6


def simulated() -> bool:
    """True under NUMBA_ENABLE_CUDASIM (device arrays are FakeCUDAArray wrappers)."""
    return bool(numba_config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=None)
def nb_dtype(dtype) -> numba.types.Type:
    return numba.from_dtype(np.dtype(dtype))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def elem_strides(x) -> tuple[int, ...]:
    """Strides of device array ``x`` in elements."""
    item = x.dtype.itemsize
    return tuple(int(s) // item for s in x.strides)


def strided_view(d, offset: int, shape, strides):
    """A device array over the memory of device array ``d``: element ``i`` at ``d``'s first
    element + ``offset + sum(i_k * strides[k])`` (element units, non-negative). Nothing is
    copied. The one place that builds device views on numba-cuda's array classes (a
    ``FakeCUDAArray`` over a NumPy view under the simulator, a ``DeviceNDArray`` over a
    ``gpu_data`` view on a GPU)."""
    shape = tuple(int(s) for s in shape)
    strides = tuple(int(s) for s in strides)
    if any(s < 0 for s in strides) or offset < 0:
        raise NotImplementedError("negative strides are not supported on cuda")
    if element_count(shape) == 0:
        return device_array(shape, d.dtype)
    item = d.dtype.itemsize
    byte_strides = tuple(s * item for s in strides)
    if simulated():  # each array class is imported only where its mode is on
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        as_strided = np.lib.stride_tricks.as_strided
        start = as_strided(d._ary, shape=(offset + 1,), strides=(item,))[offset:]
        return FakeCUDAArray(as_strided(start, shape=shape, strides=byte_strides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(shape, byte_strides, d.dtype, gpu_data=d.gpu_data.view(offset * item))


def flat_view(x):
    """A 1-D device array over the memory of ``x`` (any non-negative strides) and its strides.

    Element (i0, i1, ...) of ``x`` is ``flat[sum(i_k * strides[k])]``.
    """
    strides = elem_strides(x)
    if x.size == 0:
        return x.reshape(0) if x.ndim != 1 else x, strides
    if x.ndim == 0:
        return x.reshape(1), ()
    if x.is_c_contiguous():
        return x.reshape(x.size), strides
    return strided_view(x, 0, (span(x.shape, strides),), (1,)), strides


def pad(t, fill: int = 0) -> tuple[int, ...]:
    """Left-pad a shape/stride tuple to MAX_DIMS (leading dims of size 1 / stride 0)."""
    t = tuple(int(v) for v in t)
    if len(t) > MAX_DIMS:
        raise ValueError(f"at most {MAX_DIMS} dimensions are supported, got {len(t)}")
    return (fill,) * (MAX_DIMS - len(t)) + t


def pow2_at_least(n: int, lo: int = 1) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@cuda.jit(device=True)
def offset_of(flat_idx, shape, strides):
    """Offset of the flat C-order index ``flat_idx`` of ``shape`` (MAX_DIMS tuple) under ``strides``."""
    off = 0
    rem = flat_idx
    for k in range(MAX_DIMS - 1, -1, -1):
        n = shape[k]
        off += (rem % n) * strides[k]
        rem //= n
    return off


@cuda.jit(device=True)
def offsets_of(flat_idx, shape, a_strides, b_strides):
    """``offset_of`` under two stride tuples at once (one decode of the index for both)."""
    a = 0
    b = 0
    rem = flat_idx
    for k in range(MAX_DIMS - 1, -1, -1):
        n = shape[k]
        j = rem % n
        rem //= n
        a += j * a_strides[k]
        b += j * b_strides[k]
    return a, b


FAST_LIMIT = 1 << 31  # index spaces below this take the 32-bit contiguous fast paths


@cuda.jit(device=True)
def flat_index32():
    """This thread's flat index in a 1-D launch, in uint32 (no 64-bit multiply)."""
    return np.uint32(np.uint32(cuda.blockIdx.x) * np.uint32(cuda.blockDim.x) + np.uint32(cuda.threadIdx.x))


@cuda.jit(device=True)
def flat_step32():
    """The number of threads of a 1-D launch (a grid-stride loop's step), in uint32. With at
    most MAX_BLOCKS x THREADS threads and an index below ``FAST_LIMIT`` the loop index never wraps."""
    return np.uint32(np.uint32(cuda.gridDim.x) * np.uint32(cuda.blockDim.x))


SUM, MAX, MIN = 0, 1, 2  # the reductions of ``combine`` / ``block_reduce``


@cuda.jit(device=True)
def combine(a, b, op):
    """``a + b``, ``max(a, b)`` or ``min(a, b)`` for ``op`` = SUM, MAX, MIN."""
    if op == SUM:
        return a + b
    if op == MAX:
        return max(a, b)
    return min(a, b)


@cuda.jit(device=True)
def block_reduce(sh, val, tid, nthreads, op):
    """``val`` reduced by ``op`` (SUM, MAX, MIN) over the block, returned to every thread: a tree
    in the ``nthreads``-slot shared array ``sh`` (nthreads a power of two). All threads must call
    it (it synchronises); ``sh`` may be reused right after."""
    sh[tid] = val
    cuda.syncthreads()
    s = nthreads // 2
    while s > 0:
        if tid < s:
            sh[tid] = combine(sh[tid], sh[tid + s], op)
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def block_sum(sh, val, tid, nthreads):
    """Sum of ``val`` over the block (see ``block_reduce``)."""
    return block_reduce(sh, val, tid, nthreads, SUM)


@cuda.jit(device=True)
def row_max(sh, x, row, tid, nthreads, lowest):
    """The max of row ``row`` of the 2-D ``x``, returned to every thread of the block: thread
    ``tid`` folds columns tid, tid + nthreads, ... (from ``lowest``), then ``block_reduce``."""
    m = lowest
    for j in range(tid, x.shape[1], nthreads):
        m = max(m, x[row, j])
    return block_reduce(sh, m, tid, nthreads, MAX)


# ---------------------------------------------------------------- launches and allocations
class Counters:
    """Process-wide counts of what the CUDA backend asks of the device (see ``counters``).

    ``launches``: kernel launches through ``launch``; ``driver_allocs``: device allocations
    that missed the caching pool (a ``cuMemAlloc`` on a GPU); ``pool_hits``: allocations served
    from the pool; ``syncs``: host waits on the device made by the backend (``to_numpy`` and
    ``minitrans.cuda.synchronize``). ``launched`` maps each kernel's name to its launch count.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.launches = 0
        self.driver_allocs = 0
        self.pool_hits = 0
        self.syncs = 0
        self.launched: dict = {}

    def snapshot(self) -> dict:
        return dict(launches=self.launches, driver_allocs=self.driver_allocs,
                    pool_hits=self.pool_hits, syncs=self.syncs)


counters = Counters()


def _kernel_name(kern) -> str:
    f = getattr(kern, "py_func", None) or getattr(kern, "fn", None)
    return f"{f.__module__.rsplit('.', 1)[-1]}.{f.__name__}" if f is not None else repr(kern)


_recording: list = []  # sets collecting launch keys (see record_launches)


def arg_type(a):
    """The Numba type a kernel launch gives argument ``a`` (device arrays by dtype, rank and
    layout, which also works for the simulator's arrays)."""
    if hasattr(a, "shape") and hasattr(a, "is_c_contiguous") and not isinstance(a, np.generic):
        return numba.types.Array(nb_dtype(a.dtype), len(a.shape), "C" if a.is_c_contiguous() else "A")
    return numba.typeof(a)


class record_launches:
    """``with record_launches() as keys:`` collects ``(kernel name, argument types)`` of every
    launch in the block (compared with the compile guard's list by the tests)."""

    def __enter__(self):
        self.keys = set()
        _recording.append(self.keys)
        return self.keys

    def __exit__(self, *exc):
        _recording.remove(self.keys)
        return False


def launch(kern, grid, block, *args) -> None:
    """``kern[grid, block](*args)``, counted in ``counters`` (every kernel of the backend goes
    through here). A launch is asynchronous on a GPU: nothing here waits for the device."""
    counters.launches += 1
    name = _kernel_name(kern)
    counters.launched[name] = counters.launched.get(name, 0) + 1
    if _recording:
        key = (name, tuple(str(arg_type(a)) for a in args))
        for keys in _recording:
            keys.add(key)
    kern[grid, block](*args)


class CachingPool:
    """A size-class caching allocator: freed blocks go to a free list of their size class and
    serve the next request of that class, so a training step that repeats the previous step's
    allocations takes every block from the pool (no driver call, no free, no synchronisation).

    Size classes: powers of two from 512 bytes up to 1 MiB, then multiples of 1 MiB. Blocks
    are never returned to the driver (``release_all`` empties the cache). Safe on one stream:
    a block freed by the host while a queued kernel still uses it is handed out only to work
    queued after that kernel on the same stream.
    """

    def __init__(self, driver_alloc):
        self._driver_alloc = driver_alloc
        self._free: dict = {}
        self.cached_bytes = 0

    @staticmethod
    def size_class(nbytes: int) -> int:
        nbytes = max(int(nbytes), 1)
        if nbytes <= 1 << 20:
            return max(512, 1 << (nbytes - 1).bit_length())
        return -(-nbytes // (1 << 20)) << 20

    def alloc(self, nbytes: int):
        """``(size_class, block)``; the block comes from the free list when one is there."""
        cap = self.size_class(nbytes)
        lst = self._free.get(cap)
        if lst:
            counters.pool_hits += 1
            self.cached_bytes -= cap
            return cap, lst.pop()
        counters.driver_allocs += 1
        return cap, self._driver_alloc(cap)

    def release(self, cap: int, block) -> None:
        self._free.setdefault(cap, []).append(block)
        self.cached_bytes += cap

    def release_all(self) -> None:
        self._free.clear()
        self.cached_bytes = 0


class _Token:
    """Stands for a pooled block in the simulator (whose memory is fresh NumPy memory)."""


simulator_pool = CachingPool(lambda cap: _Token())


def device_array(shape, dtype):
    """A new C-contiguous device array. On a GPU ``cuda.device_array`` goes through the pooled
    EMM plugin (``minitrans.backends.cuda.pool``). Under the simulator the same ``CachingPool``
    keeps the books: each array gets fresh NumPy memory (so no aliasing can hide a bug), and its
    pool block is released when the last view of that memory is gone."""
    shape = tuple(int(s) for s in shape) if not isinstance(shape, (int, np.integer)) else (int(shape),)
    dtype = np.dtype(dtype)
    if not simulated():
        return cuda.device_array(shape, dtype=dtype)
    # the simulator's array class, imported only when the simulator is on
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    n = 1
    for s in shape:
        n *= s
    nbytes = n * dtype.itemsize
    cap, tok = simulator_pool.alloc(nbytes)
    buf = np.empty(max(nbytes, dtype.itemsize), np.uint8)  # owns the memory: every view keeps it alive
    weakref.finalize(buf, simulator_pool.release, cap, tok)
    return FakeCUDAArray(buf[:nbytes].view(dtype).reshape(shape))
