"""Elementwise kernels: unary map, broadcasting binary zip, ternary ``where``.

Launch shape: 1-D grid-stride loop, ``THREADS`` threads per block,
``min(ceil(n / THREADS), MAX_BLOCKS)`` blocks; thread ``i`` writes output elements
``i, i + gridsize, ...``.
Memory plan: every input is a flat view of its own memory plus per-dim element strides
(0 on broadcast dims, see ``_util.flat_view``); each thread decodes its flat C-order
output index once into one offset per input, reads each input cell once and writes the
(C-contiguous) output once. No shared memory. Shapes/strides are by-value int64 tuples
padded to ``MAX_DIMS`` = 6, so one compiled kernel serves every rank.
Float results keep the NumPy result dtype (``np.result_type`` of the inputs);
comparisons return bool.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import broadcast_strides, cdiv, flat_view, offset_of, pad

THREADS = 256
MAX_BLOCKS = 4096
GELU_C = math.sqrt(2.0 / math.pi)


# ---------------------------------------------------------------- scalar device functions
@cuda.jit(device=True)
def _sigmoid(x):
    """Logistic of x without overflow for large |x|. Device function, per thread; registers only."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@cuda.jit(device=True)
def _gelu(x):
    """tanh-approximation GELU of x. Device function, per thread; registers only."""
    return 0.5 * x * (1.0 + math.tanh(GELU_C * (x + 0.044715 * x * x * x)))


@cuda.jit(device=True)
def _gelu_grad(x):
    """Derivative of the tanh-approximation GELU at x. Device function, per thread; registers only."""
    t = math.tanh(GELU_C * (x + 0.044715 * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * x * x)


@cuda.jit(device=True)
def _sign(x):
    """sign(x) as a float (NaN stays NaN). Device function, per thread; registers only."""
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return 0.0 * x  # keeps NaN


UNARY = {
    "identity": cuda.jit(device=True)(lambda x: x),
    "neg": cuda.jit(device=True)(lambda x: -x),
    "exp": cuda.jit(device=True)(lambda x: math.exp(x)),
    "log": cuda.jit(device=True)(lambda x: math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)),
    "sqrt": cuda.jit(device=True)(lambda x: math.sqrt(x) if x >= 0 else math.nan),
    "abs": cuda.jit(device=True)(lambda x: abs(x)),
    "tanh": cuda.jit(device=True)(lambda x: math.tanh(x)),
    "sigmoid": _sigmoid,
    "relu": cuda.jit(device=True)(lambda x: x if x > 0 else 0.0 * x),
    "gelu": _gelu,
    "sign": _sign,
    "square": cuda.jit(device=True)(lambda x: x * x),
    "reciprocal": cuda.jit(device=True)(lambda x: 1.0 / x),
}

# (x, g) -> g * f'(x): the backward of the unary ops whose derivative is not a composition
BINARY = {
    "add": cuda.jit(device=True)(lambda a, b: a + b),
    "sub": cuda.jit(device=True)(lambda a, b: a - b),
    "mul": cuda.jit(device=True)(lambda a, b: a * b),
    "div": cuda.jit(device=True)(lambda a, b: a / b),
    "pow": cuda.jit(device=True)(lambda a, b: a ** b),
    "maximum": cuda.jit(device=True)(lambda a, b: a if (a >= b or a != a) else b),
    "minimum": cuda.jit(device=True)(lambda a, b: a if (a <= b or a != a) else b),
    "relu_backward": cuda.jit(device=True)(lambda x, g: g if x > 0 else 0.0 * g),
    "sigmoid_backward": cuda.jit(device=True)(lambda x, g: g * _sigmoid(x) * (1.0 - _sigmoid(x))),
    "tanh_backward": cuda.jit(device=True)(lambda x, g: g * (1.0 - math.tanh(x) * math.tanh(x))),
    "gelu_backward": cuda.jit(device=True)(lambda x, g: g * _gelu_grad(x)),
    "eq": cuda.jit(device=True)(lambda a, b: a == b),
    "ne": cuda.jit(device=True)(lambda a, b: a != b),
    "lt": cuda.jit(device=True)(lambda a, b: a < b),
    "le": cuda.jit(device=True)(lambda a, b: a <= b),
    "gt": cuda.jit(device=True)(lambda a, b: a > b),
    "ge": cuda.jit(device=True)(lambda a, b: a >= b),
}
COMPARISONS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})


# ---------------------------------------------------------------- kernels (one per op)
@functools.lru_cache(maxsize=None)
def _map_kernel(op: str):
    f = UNARY[op]

    @cuda.jit
    def map_kernel(out, x, n, shape, xs):
        """out[i] = f(x[offset_of(i, shape, xs)]) for the unary ``op``. Launch `_launch(n)`: 1-D
        grid-stride loop, min(ceil(n / THREADS), MAX_BLOCKS) blocks x THREADS, thread i owns i,
        i + gridsize, ...; each input cell read once, the C-contiguous out written once; no shared memory."""
        i = cuda.grid(1)
        while i < n:
            out[i] = f(x[offset_of(i, shape, xs)])
            i += cuda.gridsize(1)

    return map_kernel


@functools.lru_cache(maxsize=None)
def _zip_kernel(op: str):
    f = BINARY[op]

    @cuda.jit
    def zip_kernel(out, a, b, n, shape, as_, bs):
        """out[i] = f(a[offset_of(i, shape, as_)], b[offset_of(i, shape, bs)]) for the binary ``op``
        (broadcast strides). Launch `_launch(n)`: 1-D grid-stride, THREADS x <= MAX_BLOCKS; each
        input cell read once, the C-contiguous out written once; no shared memory."""
        i = cuda.grid(1)
        while i < n:
            out[i] = f(a[offset_of(i, shape, as_)], b[offset_of(i, shape, bs)])
            i += cuda.gridsize(1)

    return zip_kernel


@cuda.jit
def _where_kernel(out, c, a, b, n, shape, cs, as_, bs):
    """out[i] = a[...] if c[...] else b[...] (all three broadcast by strides). Launch `_launch(n)`:
    1-D grid-stride, THREADS x <= MAX_BLOCKS; c and one of a / b read once per cell, out
    written once; no shared memory."""
    i = cuda.grid(1)
    while i < n:
        if c[offset_of(i, shape, cs)]:
            out[i] = a[offset_of(i, shape, as_)]
        else:
            out[i] = b[offset_of(i, shape, bs)]
        i += cuda.gridsize(1)


# ---------------------------------------------------------------- host wrappers
def _launch(n: int) -> tuple[int, int]:
    return max(1, min(cdiv(n, THREADS), MAX_BLOCKS)), THREADS


def _out(shape, dtype, out):
    if out is None:
        return cuda.device_array(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape) or not out.is_c_contiguous():
        raise ValueError(f"out must be C-contiguous with shape {tuple(shape)}")
    return out


def _operands(out_shape, *xs):
    views = []
    for x in xs:
        flat, st = flat_view(x)
        views.append((flat, pad(broadcast_strides(x.shape, st, out_shape))))
    return views


def unary(op: str, x, out=None):
    """``op(x)`` elementwise; ``x`` may be any strided view. Returns a C-contiguous array."""
    kern = _map_kernel(op)
    shape = tuple(x.shape)
    y = _out(shape, x.dtype, out)
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        ((xf, xs),) = _operands(shape, x)
        kern[_launch(n)](y.reshape(n), xf, n, pad(shape, 1), xs)
    return y


def binary(op: str, a, b, out=None):
    """``op(a, b)`` with NumPy broadcasting (comparisons give bool)."""
    kern = _zip_kernel(op)
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    dtype = np.bool_ if op in COMPARISONS else np.result_type(a.dtype, b.dtype)
    y = _out(shape, dtype, out)
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        (af, as_), (bf, bs) = _operands(shape, a, b)
        kern[_launch(n)](y.reshape(n), af, bf, n, pad(shape, 1), as_, bs)
    return y


def where(cond, a, b, out=None):
    """``cond ? a : b`` with NumPy broadcasting of all three."""
    shape = np.broadcast_shapes(tuple(cond.shape), tuple(a.shape), tuple(b.shape))
    y = _out(shape, np.result_type(a.dtype, b.dtype), out)
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        (cf, cs), (af, as_), (bf, bs) = _operands(shape, cond, a, b)
        _where_kernel[_launch(n)](y.reshape(n), cf, af, bf, n, pad(shape, 1), cs, as_, bs)
    return y
