"""The CUDA backend: ``CudaArray`` (a strided view of numba-cuda device memory) and
``CUDABackend``, the same namespace of primitives as ``cpu.CPUBackend``.

Modules: ``array`` (``CudaArray``, views, the host<->device entry points ``from_numpy`` /
``to_numpy``), ``ops`` (operands and scalar constants, elementwise, creation, reductions),
``indexing`` (shape functions, basic / advanced indexing, ``add_at``), ``backend``
(matmul, the fused-kernel bindings and the ``CUDABackend`` namespace) and ``reference`` (the
fused ops run by the NumPy oracle, for ``set_kernels("reference")``).

Design
------
* A ``CudaArray`` wraps one numba device array ``_device_array`` (a ``DeviceNDArray`` on a
  GPU, a ``FakeCUDAArray`` under ``NUMBA_ENABLE_CUDASIM=1``). Views — basic slicing, ``None``,
  ``transpose``/``moveaxis``/``.T``, ``broadcast_to`` (stride 0), ``split_at``, ``squeeze``,
  ``reshape`` whenever NumPy could reshape without a copy — are new device arrays over the
  *same* memory with other shape/strides/offset (``CudaArray._view``, laid out by
  ``kernels/cuda/layout.py`` and built by ``_util.strided_view``); nothing is copied. A view
  records the array that owns the memory (``_base``), so ``shares_storage`` — and with it the
  autograd version counters — treats a view and its base as one storage, as on the CPU. The kernels of
  ``minitrans.kernels.cuda`` take any non-negative strided view, so transposed weights go
  straight into matmul and broadcast biases straight into attention.
* Every computation runs on the device through ``minitrans.kernels.cuda``: elementwise /
  comparison / ``where`` / reductions / matmul / fused nn kernels, plus the plumbing in
  ``kernels/cuda/array.py`` (fill, arange, strided copy, logical maps, index gather /
  scatter-add, dropout mask).
* Python scalars in expressions (``x * 0.5``, ``a > 0``) become cached 0-d device
  constants filled by a kernel (``_const``): launching a kernel with a scalar argument is
  not a host->device copy.
* Host <-> device copies happen only in ``from_numpy`` / ``to_numpy`` and where host data
  enters explicitly: ``asarray``/``ascontiguousarray`` of host arrays, host NumPy operands
  or index arrays, and the two reads listed below. ``CudaArray.item()``/``bool()``/
  ``float()``/``int()`` read one value through ``to_numpy``. ``np.asarray(cuda_array)``
  raises instead of copying silently.
* Host reads that are unavoidable by design: indexing with a **bool mask** that lives on
  the device (the result's size is data-dependent: the mask is copied to the host for
  ``np.nonzero``). The training step of the library never does this.
* Index-range checks (embedding indices, loss targets) wait for nothing: one launch writes
  the indices' [min, max] into a device slot and the next host read brings every pending
  slot back, in the same transfer as a small value (``.item()``), raising the CPU's
  IndexError for the first failed check (``pending_checks``).
* Dtype rules follow NumPy 2 (``np.result_type`` with weak Python scalars).
* In-place operators (``+= -= *= /=``) write into the array's own memory (in the result
  dtype cast to the array's dtype); operands are assumed not to overlap the target.
* Device memory comes from a caching pool (``pool``): after the first training step a
  step allocates nothing from the driver and never waits for the device; the counters in
  ``kernels/cuda/_util.counters`` (launches, driver allocations, pool hits, host waits) prove it.
* Not supported (raise): negative-step slices, more than 6 dims in a kernel, ``~`` on
  non-bool arrays.
"""
from __future__ import annotations

from . import pool

pool.install()  # before the first allocation creates the CUDA context (a GPU only)

from .array import CudaArray, from_numpy, to_numpy  # noqa: E402
from .ops import (  # noqa: E402
    all_, amax, amin, any_, arange, argmax, argmin, asarray, ascontiguousarray, astype, clip, copy,
    empty, errstate, full, isfinite, logical_not, maximum, mean, minimum, ones, ones_like, power,
    sigmoid, sum_, where, zeros, zeros_like,
)
from .indexing import (  # noqa: E402
    add_at, broadcast_to, concatenate, moveaxis, reshape, split_at, sum_to, transpose,
)
from .backend import (  # noqa: E402
    CUDABackend, adam_step, attention_backward, attention_forward, cross_entropy_backward,
    cross_entropy_forward, dropout_mask, layer_norm_backward, layer_norm_forward,
    log_softmax_backward, log_softmax_forward, matmul, softmax_backward, softmax_forward,
)

__all__ = [
    "CUDABackend", "CudaArray", "from_numpy", "to_numpy",
    "all_", "amax", "amin", "any_", "arange", "argmax", "argmin", "asarray", "ascontiguousarray",
    "astype", "clip", "copy", "empty", "errstate", "full", "isfinite", "logical_not", "maximum",
    "mean", "minimum", "ones", "ones_like", "power", "sigmoid", "sum_", "where", "zeros",
    "zeros_like", "add_at", "broadcast_to", "concatenate", "moveaxis", "reshape", "split_at",
    "sum_to", "transpose", "adam_step", "attention_backward", "attention_forward",
    "cross_entropy_backward", "cross_entropy_forward", "dropout_mask", "layer_norm_backward",
    "layer_norm_forward", "log_softmax_backward", "log_softmax_forward", "matmul",
    "softmax_backward", "softmax_forward",
]
