"""CUDA backend kernels: Numba ``@cuda.jit`` kernels on numba-cuda device arrays.

Same names and signatures as ``minitrans.kernels.reference`` for the fused ops (see
docs/kernels.md, section "CUDA specifics" for what differs), plus the primitives the CUDA
array backend needs. Every function takes and returns device arrays; outputs are
allocated with ``cuda.device_array`` and nothing is copied between host and device.
Tile sizes are UPPER_CASE constants of each module (read at call time, so tests may
shrink them); each module's docstring gives its launch shape and memory plan.

Example::

    import numpy as np
    from numba import cuda
    from minitrans.kernels import cuda as kernels

    a = cuda.to_device(np.random.randn(4, 8, 16).astype(np.float32))
    w = cuda.to_device(np.random.randn(16, 32).astype(np.float32))
    h = kernels.matmul(a, w)                 # (4, 8, 32), batch broadcast
    h = kernels.unary("tanh", h)
    y = kernels.softmax_forward(h.reshape((32, 32)))
    s = kernels.reduce("sum", h, axes=(0, 2), keepdims=True)   # (1, 8, 1)
    dw = kernels.matmul(a.reshape((32, 16)).T, h.reshape((32, 32)))  # Aᵀ·G: a strided view, no copy
    print(y.copy_to_host().sum(-1))          # ones

Run under ``NUMBA_ENABLE_CUDASIM=1`` (set before importing numba) without a GPU.
"""
from .adam import adam_step
from .clip import clip_grad_norm
from .attention import attention_backward, attention_forward
from .cross_entropy import cross_entropy_backward, cross_entropy_forward
from .elementwise import BINARY, COMPARISONS, UNARY, binary, clamp, unary, where
from .layer_norm import layer_norm_backward, layer_norm_forward
from .matmul import matmul
from .reduce import argmax, reduce
from .softmax import log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward

__all__ = [
    "unary", "binary", "where", "clamp", "UNARY", "BINARY", "COMPARISONS", "reduce", "argmax", "matmul",
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward", "layer_norm_forward", "layer_norm_backward",
    "attention_forward", "attention_backward", "adam_step", "clip_grad_norm",
]
