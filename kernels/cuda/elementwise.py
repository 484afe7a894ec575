"""Elementwise kernels: unary map, broadcasting binary zip, ternary ``where``, and ``clamp``.

Launch shape: 1-D grid-stride loop, ``THREADS`` threads per block,
``min(ceil(n / THREADS), MAX_BLOCKS)`` blocks; thread ``i`` writes output elements
``i, i + gridsize, ...``.
Memory plan: each input cell is read once and the (C-contiguous) output written once; no
shared memory. Two kernels per (op, dtype):

* the contiguous fast path (``_map_contig_kernel`` / ``_zip_contig_kernel``, float inputs):
  every operand C-contiguous with the output's shape, or C-contiguous and repeating along it
  (one element, a bias row: shaped like the output's trailing dims, read at ``i % size``), and
  fewer than 2**31 elements; thread index, loop and offsets in uint32, ``x[i]``: no stride
  decoding and no 64-bit division (``tests/cuda/test_fast_path.py`` checks the sm_90 PTX);
* the strided kernels (``_map_kernel`` / ``_zip_kernel``): every input a flat view of its
  memory plus per-dim element strides (0 on broadcast dims, see ``_util.flat_view``); each
  thread decodes its flat C-order index into one offset per input (a 64-bit division and
  remainder per dim). Shapes/strides are by-value int64 tuples padded to ``MAX_DIMS`` = 6, so
  one compiled kernel serves every rank.
Kernels are compiled per (op, dtype), the operands of a binary op / ``where`` share one dtype
(``binary`` / ``where`` cast first), and a kernel's constants have its float dtype, so a float32
kernel has no double-precision instruction (checked by ``guard``). Comparisons return bool.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import FAST_LIMIT, cdiv, device_array, flat_index32, flat_step32, flat_view, launch, offset_of, pad
from .layout import broadcast_strides

THREADS = 256
MAX_BLOCKS = 4096


# ---------------------------------------------------------------- scalar device functions
def _ftype(dtype):
    """The NumPy scalar type of the constants in ``dtype``'s kernels: the dtype itself for a
    float, float64 for int/bool inputs (float functions of ints compute in float64). A float32
    kernel thus sees float32 constants only and stays in single precision (a Python float
    literal is a float64 constant and would promote the arithmetic around it)."""
    dtype = np.dtype(dtype)
    return dtype.type if dtype.kind == "f" else np.float64


@functools.lru_cache(maxsize=None)
def _unary_fns(dtype) -> dict:
    """Device functions x -> f(x) with constants of ``_ftype(dtype)``. Per thread; registers only."""
    in_dtype = _ftype(dtype)
    zero, one = in_dtype(0), in_dtype(1)
    inf, nan = in_dtype(math.inf), in_dtype(math.nan)
    dev = cuda.jit(device=True)

    @dev
    def sigmoid(x):
        """Logistic of x without overflow for large |x|."""
        if x >= zero:
            return one / (one + math.exp(-x))
        e = math.exp(x)
        return e / (one + e)

    @dev
    def sign(x):
        """sign(x) (NaN stays NaN)."""
        if x > zero:
            return one
        if x < zero:
            return -one
        return zero * x

    return {
        "identity": dev(lambda x: x),
        "neg": dev(lambda x: -x),
        "exp": dev(lambda x: math.exp(x)),
        "log": dev(lambda x: math.log(x) if x > zero else (-inf if x == zero else nan)),
        "sqrt": dev(lambda x: math.sqrt(x) if x >= zero else nan),
        "abs": dev(lambda x: abs(x)),
        "tanh": dev(lambda x: math.tanh(x)),
        "sigmoid": sigmoid,
        "sign": sign,
    }


@functools.lru_cache(maxsize=None)
def _binary_fns() -> dict:
    """Device functions (a, b) -> f(a, b), typed at each kernel's compile (they hold no constant).
    Per thread; registers only."""
    dev = cuda.jit(device=True)
    return {
        "add": dev(lambda a, b: a + b),
        "sub": dev(lambda a, b: a - b),
        "mul": dev(lambda a, b: a * b),
        "div": dev(lambda a, b: a / b),
        "pow": dev(lambda a, b: a ** b),
        "maximum": dev(lambda a, b: a if (a >= b or a != a) else b),
        "minimum": dev(lambda a, b: a if (a <= b or a != a) else b),
        "eq": dev(lambda a, b: a == b),
        "ne": dev(lambda a, b: a != b),
        "lt": dev(lambda a, b: a < b),
        "le": dev(lambda a, b: a <= b),
        "gt": dev(lambda a, b: a > b),
        "ge": dev(lambda a, b: a >= b),
    }


UNARY = tuple(_unary_fns(np.float64))
BINARY = tuple(_binary_fns())
COMPARISONS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
MASK_OPS = frozenset({"mul"})  # float ops that take a bool operand as it is (no cast launch)


# ---------------------------------------------------------------- kernels (one per op and dtype)
@functools.lru_cache(maxsize=None)
def _map_kernel(op: str, dtype):
    """The strided kernel of unary ``op`` for inputs of ``dtype`` (constants typed by ``_ftype``)."""
    f = _unary_fns(np.dtype(dtype))[op]

    @cuda.jit
    def map_kernel(out, x, n, shape, xs):
        """out[i] = f(x[offset_of(i, shape, xs)]) for the unary ``op`` (any strided x). Launch
        `_launch(n)`: 1-D grid-stride loop, min(ceil(n / THREADS), MAX_BLOCKS) blocks x THREADS,
        thread i owns i, i + gridsize, ...; each input cell read once, the C-contiguous out written
        once; no shared memory. 64-bit index decoding: MAX_DIMS divisions per element."""
        i = cuda.grid(1)
        while i < n:
            out[i] = f(x[offset_of(i, shape, xs)])
            i += cuda.gridsize(1)

    return map_kernel


@functools.lru_cache(maxsize=None)
def _map_contig_kernel(op: str, dtype):
    """The contiguous fast path of unary ``op`` (also the cast / copy kernel: ``identity``)."""
    f = _unary_fns(np.dtype(dtype))[op]

    @cuda.jit
    def map_contig_kernel(out, x, n):
        """out[i] = f(x[i]) for C-contiguous x and out of n < 2**31 elements. Launch `_launch(n)`
        (1-D grid-stride, THREADS x <= MAX_BLOCKS); flat uint32 index math (no stride decoding, no
        64-bit multiply or division); each cell read once and written once; no shared memory."""
        i = flat_index32()
        step = flat_step32()
        while i < n:
            out[i] = f(x[i])
            i = np.uint32(i + step)

    return map_contig_kernel


def _to_compute(dtype):
    """The conversion of an operand to the compute dtype inside a binary kernel: a float kernel
    may take a bool mask operand (``MASK_OPS``) and converts its cells in registers; other
    kernels take operands of their own dtype."""
    dtype = np.dtype(dtype)
    return dtype.type if dtype.kind == "f" else _same


_same = cuda.jit(device=True)(lambda v: v)


@functools.lru_cache(maxsize=None)
def _zip_kernel(op: str, dtype):
    """The strided kernel of binary ``op`` for two inputs of ``dtype``."""
    f = _binary_fns()[op]
    to = _to_compute(dtype)

    @cuda.jit
    def zip_kernel(out, a, b, n, shape, as_, bs):
        """out[i] = f(to(a[offset_of(i, shape, as_)]), to(b[offset_of(i, shape, bs)])) for the binary ``op``
        (broadcast strides). Launch `_launch(n)`: 1-D grid-stride, THREADS x <= MAX_BLOCKS; each
        input cell read once, the C-contiguous out written once; no shared memory. 64-bit index
        decoding: 2 x MAX_DIMS divisions per element."""
        i = cuda.grid(1)
        while i < n:
            out[i] = f(to(a[offset_of(i, shape, as_)]), to(b[offset_of(i, shape, bs)]))
            i += cuda.gridsize(1)

    return zip_kernel


@functools.lru_cache(maxsize=None)
def _zip_contig_kernel(op: str, dtype):
    """The contiguous fast path of binary ``op`` for two inputs of ``dtype``."""
    f = _binary_fns()[op]
    to = _to_compute(dtype)

    @cuda.jit
    def zip_contig_kernel(out, a, b, n, a_period, b_period):
        """out[i] = f(a[i % a_period], b[i % b_period]), n < 2**31: an operand's period is n (C-contiguous
        with the output's shape: read at i, no remainder), its size when it repeats along the output
        (C-contiguous, shaped like the output's trailing dims: a bias row, a one-element operand).
        Launch `_launch(n)` (1-D grid-stride, THREADS x <= MAX_BLOCKS); flat uint32 index math (at
        most one 32-bit remainder per repeating operand), no stride decoding; each output cell
        written once; no shared memory."""
        i = flat_index32()
        step = flat_step32()
        while i < n:
            ja = i
            if a_period != n:
                ja = np.uint32(i % a_period)
            jb = i
            if b_period != n:
                jb = np.uint32(i % b_period)
            out[i] = f(to(a[ja]), to(b[jb]))
            i = np.uint32(i + step)

    return zip_contig_kernel


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


@functools.lru_cache(maxsize=None)
def _clamp_kernel(dtype):
    """The clamp kernel of ``dtype``: NumPy's ``clip`` (``maximum`` then ``minimum``, so NaN
    propagates) with scalar bounds, writing through any strided ``out`` (``out`` may be ``x``)."""
    fns = _binary_fns()
    at_least, at_most = fns["maximum"], fns["minimum"]

    @cuda.jit
    def clamp_kernel(out, x, n, shape, os, xs, lo, hi, use_lo, use_hi):
        """out[offset_of(i, shape, os)] = clip(x[offset_of(i, shape, xs)], lo, hi) (a bound is skipped
        when its ``use_*`` flag is False). Launch `_launch(n)`: 1-D grid-stride, THREADS x <= MAX_BLOCKS;
        each cell read once, then written once by the same thread (so ``out`` may be ``x``); no shared
        memory."""
        i = cuda.grid(1)
        while i < n:
            v = x[offset_of(i, shape, xs)]
            if use_lo:
                v = at_least(v, lo)
            if use_hi:
                v = at_most(v, hi)
            out[offset_of(i, shape, os)] = v
            i += cuda.gridsize(1)

    return clamp_kernel


# ---------------------------------------------------------------- host wrappers
def _launch(n: int) -> tuple[int, int]:
    return max(1, min(cdiv(n, THREADS), MAX_BLOCKS)), THREADS


def _out(shape, dtype, out):
    if out is None:
        return device_array(shape, dtype)
    if tuple(out.shape) != tuple(shape) or not out.is_c_contiguous():
        raise ValueError(f"out must be C-contiguous with shape {tuple(shape)}")
    return out


def _operands(out_shape, *xs):
    views = []
    for x in xs:
        flat, st = flat_view(x)
        views.append((flat, pad(broadcast_strides(x.shape, st, out_shape))))
    return views


def fast_path_dtype(dtype, n: int) -> bool:
    """The contiguous fast path is compiled for float inputs (the arrays of training; integer and
    bool inputs take the strided kernels, which keeps the compile guard's list short) and index
    spaces that 32-bit index math covers."""
    return np.dtype(dtype).kind == "f" and n < FAST_LIMIT


def _flat_period(x, shape, n: int):
    """x as a flat array and its fast-path period: n if x is C-contiguous with ``shape``, x's size if
    x is C-contiguous and shaped like trailing dims of ``shape`` (leading 1s aside: it repeats along
    the flat output), e.g. a bias row or one element; None when the fast path cannot read it."""
    xshape = tuple(x.shape)
    if xshape == tuple(shape) and x.is_c_contiguous():
        return x.reshape(n), n
    if x.size == 1:
        return flat_view(x)[0], 1
    while xshape and xshape[0] == 1:
        xshape = xshape[1:]
    if xshape and xshape == tuple(shape)[len(shape) - len(xshape):] and x.is_c_contiguous():
        return flat_view(x)[0], x.size
    return None


def _common(*xs):
    """``xs`` cast to their NumPy result dtype (one identity-map launch per operand that
    differs): the kernels are compiled per dtype and take operands of one dtype."""
    dt = np.result_type(*(x.dtype for x in xs))
    out = []
    for x in xs:
        if np.dtype(x.dtype) != dt:
            x = unary("identity", x, out=device_array(tuple(x.shape), dt))
        out.append(x)
    return dt, out


def unary(op: str, x, out=None):
    """``op(x)`` elementwise; ``x`` may be any strided view. Returns a C-contiguous array (``out``
    if given: then also a cast or a copy, with ``identity``)."""
    dt = np.dtype(x.dtype)
    shape = tuple(x.shape)
    y = _out(shape, x.dtype, out)
    n = int(np.prod(shape, dtype=np.int64))
    if n and fast_path_dtype(dt, n) and x.is_c_contiguous():
        launch(_map_contig_kernel(op, dt), *_launch(n), y.reshape(n), x.reshape(n), np.uint32(n))
    elif n:
        ((xf, xs),) = _operands(shape, x)
        launch(_map_kernel(op, dt), *_launch(n), y.reshape(n), xf, n, pad(shape, 1), xs)
    return y


def binary(op: str, a, b, out=None):
    """``op(a, b)`` with NumPy broadcasting and dtype rules (comparisons give bool); operands of
    different dtypes are cast to the result dtype first, except a bool mask in a float ``MASK_OPS``
    op (``relu``'s gradient ``(x > 0) * g``), which the kernel converts in registers."""
    dt = np.result_type(a.dtype, b.dtype)
    mask = op in MASK_OPS and dt.kind == "f" and {np.dtype(a.dtype), np.dtype(b.dtype)} == {dt, np.dtype(np.bool_)}
    if not mask:
        dt, (a, b) = _common(a, b)
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    y = _out(shape, np.bool_ if op in COMPARISONS else dt, out)
    n = int(np.prod(shape, dtype=np.int64))
    if not n:
        return y
    fast = (_flat_period(a, shape, n), _flat_period(b, shape, n)) if fast_path_dtype(dt, n) else (None, None)
    if None not in fast:
        (af, a_period), (bf, b_period) = fast
        launch(_zip_contig_kernel(op, dt), *_launch(n), y.reshape(n), af, bf, np.uint32(n), np.uint32(a_period),
               np.uint32(b_period))
    else:
        (af, as_), (bf, bs) = _operands(shape, a, b)
        launch(_zip_kernel(op, dt), *_launch(n), y.reshape(n), af, bf, n, pad(shape, 1), as_, bs)
    return y


def where(cond, a, b, out=None):
    """``cond ? a : b`` with NumPy broadcasting of all three."""
    shape = np.broadcast_shapes(tuple(cond.shape), tuple(a.shape), tuple(b.shape))
    dt, (a, b) = _common(a, b)
    y = _out(shape, dt, out)
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        (cf, cs), (af, as_), (bf, bs) = _operands(shape, cond, a, b)
        launch(_where_kernel, *_launch(n), y.reshape(n), cf, af, bf, n, pad(shape, 1), cs, as_, bs)
    return y


def clamp(x, lo, hi, out):
    """``np.clip(x, lo, hi, out=out)`` in one launch: ``lo`` / ``hi`` are scalars of ``x``'s dtype
    or None, ``out`` has ``x``'s shape and dtype and may be any strided view (``x`` itself for an
    in-place clamp)."""
    shape = tuple(x.shape)
    if tuple(out.shape) != shape or np.dtype(out.dtype) != np.dtype(x.dtype):
        raise ValueError(f"clamp: out must have shape {shape} and dtype {np.dtype(x.dtype)}")
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        t = np.dtype(x.dtype).type
        ((of, os), (xf, xs)) = _operands(shape, out, x)
        launch(_clamp_kernel(np.dtype(x.dtype)), *_launch(n), of, xf, n, pad(shape, 1), os, xs,
               t(0 if lo is None else lo), t(0 if hi is None else hi), lo is not None, hi is not None)
    return out
