"""The one door to MPI: import mpi4py on first use, detect CUDA-aware MPI, move Tensor data to and
from MPI buffers (in place for contiguous host arrays, through host staging buffers otherwise)."""
from __future__ import annotations

import ctypes
import os

import numpy as np

INSTALL = "pip install 'minitrans[mpi]'  (mpi4py and the MPICH wheel)"
_STATE: dict = {"MPI": None, "cuda_aware": None}


def mpi():
    """The ``mpi4py.MPI`` module, or an ImportError that says how to install it."""
    module = _STATE["MPI"]
    if module is None:
        try:
            from mpi4py import MPI as module   # optional dependency: imported on first use
        except ImportError as e:
            raise ImportError(f"minitrans.distributed needs mpi4py and an MPI library, which are not "
                              f"installed ({e}); install them with: {INSTALL}") from None
        _STATE["MPI"] = module
    return module


def available() -> bool:
    try:
        mpi()
    except ImportError:
        return False
    return True


def _query_library_cuda_support() -> bool:
    """Ask the loaded MPI library (Open MPI's and MPICH's ``MPIX_Query_cuda_support``)."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                if "libmpi" in os.path.basename(p) and p not in paths:
                    paths.append(p)
    except OSError:
        return False
    for p in paths:
        try:
            fn = getattr(ctypes.CDLL(p), "MPIX_Query_cuda_support", None)
            if fn is not None and fn() == 1:
                return True
        except OSError:
            continue
    return False


def cuda_aware() -> bool:
    """True when device buffers may go straight to MPI.

    ``MINITRANS_CUDA_AWARE_MPI=1``/``0`` decides; otherwise the library is asked through
    ``MPIX_Query_cuda_support`` (Open MPI, MPICH builds with CUDA). The PyPI wheels are not
    CUDA-aware, so with them device data is staged through host buffers.
    """
    v = os.environ.get("MINITRANS_CUDA_AWARE_MPI")
    if v is not None:
        return v.strip() not in ("", "0", "false", "no")
    if _STATE["cuda_aware"] is None:
        mpi()
        _STATE["cuda_aware"] = _query_library_cuda_support()
    return _STATE["cuda_aware"]


SUPPORTED = (np.float32, np.float64, np.int32, np.int64)


def check_dtype(arr, fn: str) -> None:
    if np.dtype(arr.dtype).type not in SUPPORTED:
        raise TypeError(f"{fn}: tensors of dtype {np.dtype(arr.dtype)} cannot be communicated; "
                        f"use float32, float64, int32 or int64")


class Staged:
    """An MPI buffer for one array: the array itself when MPI can use it in place, else a host
    copy (``staged``) written back with ``finish()``. Device arrays go to the host unless MPI is
    CUDA-aware; non-contiguous host arrays go through a contiguous copy."""

    def __init__(self, arr, read: bool = True) -> None:
        self.arr = arr
        self.staged = False
        if isinstance(arr, np.ndarray):
            if arr.flags.c_contiguous:
                self.buf = arr
            else:
                self.buf = np.ascontiguousarray(arr) if read else np.empty(arr.shape, arr.dtype)
                self.staged = True
            return
        # a CudaArray: device memory
        if cuda_aware() and arr._is_contiguous():
            self.buf = arr._device_array
            return
        self.staged = True
        self.buf = host_copy(arr) if read else np.empty(arr.shape, arr.dtype)

    def finish(self) -> None:
        if self.staged:
            write_back(self.arr, self.buf)


def pinned_empty(shape, dtype):
    """A page-locked host array where a GPU is visible (fast, asynchronous copies), else a plain one."""
    try:
        from numba import cuda

        if cuda.is_available():
            return cuda.pinned_array(shape, dtype)
    except Exception:           # no driver, or the simulator refuses: plain host memory is correct too
        pass
    return np.empty(shape, dtype)


def host_copy(arr) -> np.ndarray:
    """A contiguous host copy of a host or device array."""
    if isinstance(arr, np.ndarray):
        return np.ascontiguousarray(arr)
    from ..backends.cuda import to_numpy

    return to_numpy(arr)


def write_back(arr, host: np.ndarray) -> None:
    """Copy the host array ``host`` into ``arr`` (host or device) in place."""
    if isinstance(arr, np.ndarray):
        np.copyto(arr, host.reshape(arr.shape))
    elif arr._is_contiguous():
        arr._device_array.copy_to_device(np.ascontiguousarray(host).reshape(arr.shape))
    else:
        arr[...] = np.ascontiguousarray(host).reshape(arr.shape)
