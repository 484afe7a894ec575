"""Plain NumPy references for the CUDA-only primitives (the oracle of tests/kernels).

The fused kernels' references live in ``kernels/reference.py``.
"""
from __future__ import annotations

import math

import numpy as np

GELU_C = math.sqrt(2.0 / math.pi)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * x ** 3)))


def _gelu_grad(x):
    t = np.tanh(GELU_C * (x + 0.044715 * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3 * 0.044715 * x * x)


UNARY = {
    "identity": lambda x: x.copy(),
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    "gelu": _gelu,
    "sign": np.sign,
    "square": np.square,
    "reciprocal": np.reciprocal,
}

BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum,
    "relu_backward": lambda x, g: np.where(x > 0, g, 0),
    "sigmoid_backward": lambda x, g: g * _sigmoid(x) * (1 - _sigmoid(x)),
    "tanh_backward": lambda x, g: g * (1 - np.tanh(x) ** 2),
    "gelu_backward": lambda x, g: g * _gelu_grad(x),
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
}


def unary(op, x):
    return UNARY[op](x)


def binary(op, a, b):
    return BINARY[op](a, b)


def where(cond, a, b):
    return np.where(cond, a, b)


def reduce(op, x, axes=None, keepdims=False):
    return getattr(np, op)(x, axis=axes, keepdims=keepdims)


def argmax(x, axis=-1, keepdims=False):
    return np.argmax(x, axis=axis, keepdims=keepdims)


def matmul(a, b, trans_a=False, trans_b=False):
    if trans_a:
        a = np.swapaxes(a, -1, -2)
    if trans_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def embedding_forward(weight, idx):
    return weight[idx]


def embedding_backward(dout, idx, num_embeddings):
    dw = np.zeros((num_embeddings, dout.shape[-1]), dtype=dout.dtype)
    np.add.at(dw, idx.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    return dw


# ---------------------------------------------------------------- kernels/cuda/array.py
def full(shape, value, dtype):
    return np.full(shape, value, dtype)


def arange(n, start, step, dtype):
    return (start + step * np.arange(n)).astype(dtype)


LOGICAL_UNARY = {"not": np.logical_not, "isfinite": np.isfinite}
LOGICAL_BINARY = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}


def take(x, idx):
    """``x[idx]`` (the oracle of index_linear + gather); ``idx`` a tuple of int arrays / slices."""
    return x[idx]


def put_add(shape, idx, src, dtype):
    """``np.add.at(zeros(shape), idx, src)`` (the oracle of index_linear + scatter(accumulate))."""
    out = np.zeros(shape, dtype)
    np.add.at(out, idx, src)
    return out


def _fmix32(h):
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    return h ^ (h >> np.uint64(16))


def dropout_mask(shape, p, seed, dtype):
    i = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.uint64)
    m32 = np.uint64(0xFFFFFFFF)
    h = _fmix32((i & m32) ^ np.uint64(seed & 0xFFFFFFFF))
    h = _fmix32(h ^ (((i >> np.uint64(32)) + np.uint64((seed >> 32) & 0xFFFFFFFF)) & m32))
    u = h.astype(np.float64) * 2.3283064365386963e-10
    return np.where(u >= p, 1.0 / (1.0 - p), 0.0).astype(dtype).reshape(shape)
