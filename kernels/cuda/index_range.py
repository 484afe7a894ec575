"""The smallest and largest entry of an int64 index array in one launch, for range checks.

``index_extremes(idx, ignore)`` returns a (2,) int64 device array ``[min, max]`` of the 1-D
C-contiguous ``idx`` (non-empty), leaving out entries equal to ``ignore`` when it is not None (a
loss's ``ignore_index``); with every entry left out it is ``[INT64_MAX, INT64_MIN]``. The backend
writes them into a slot of its pending-checks buffer and reads every pending slot back in one
transfer at the next host read (``minitrans/backends/cuda/pending_checks.py``): embedding
lookups and cross-entropy targets are checked with one launch each and no wait inside a step.

Launch shape: ONE block of ``THREADS`` threads; thread ``t`` folds entries ``t, t + THREADS, ...``
into two registers and two shared trees combine them. Index arrays are small (a batch of token
ids), so one block reads them at full speed; no second launch and no atomics are needed.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ._util import MAX, MIN, block_reduce, device_array, launch

THREADS = 256  # power of two


@functools.lru_cache(maxsize=None)
def _extremes_kernel(threads: int):
    big, small = np.int64(np.iinfo(np.int64).max), np.int64(np.iinfo(np.int64).min)

    @cuda.jit
    def extremes_kernel(out, idx, n, ignore, use_ignore):
        """out[0] = min(idx), out[1] = max(idx) over the entries that are not ``ignore`` (when
        ``use_ignore``). One block of ``threads``; two ``threads``-slot int64 shared trees."""
        lo_sh = cuda.shared.array(threads, np.int64)
        hi_sh = cuda.shared.array(threads, np.int64)
        tid = cuda.threadIdx.x
        lo, hi = big, small
        i = tid
        while i < n:
            v = idx[i]
            if not (use_ignore and v == ignore):
                lo = min(lo, v)
                hi = max(hi, v)
            i += threads
        lo = block_reduce(lo_sh, lo, tid, threads, MIN)
        hi = block_reduce(hi_sh, hi, tid, threads, MAX)
        if tid == 0:
            out[0] = lo
            out[1] = hi

    return extremes_kernel


def index_extremes(idx, ignore=None, out=None):
    """``[min, max]`` of the non-empty 1-D C-contiguous int64 device array ``idx`` without the entries
    equal to ``ignore``, written into ``out`` (a (2,) int64 device array: a new one when None, or a
    slot of the CUDA backend's pending-checks buffer, read back later) and returned."""
    if len(idx.shape) != 1 or not idx.is_c_contiguous() or np.dtype(idx.dtype) != np.int64 or idx.shape[0] == 0:
        raise ValueError("index_extremes expects a non-empty 1-D C-contiguous int64 array")
    if out is None:
        out = device_array((2,), np.int64)
    launch(_extremes_kernel(THREADS), 1, THREADS, out, idx, int(idx.shape[0]), np.int64(0 if ignore is None else ignore),
           ignore is not None)
    return out
