"""Batched matmul ``C = A @ B`` with broadcast batch dims.

Shapes: ``a`` is (..., M, K) and ``b`` is (..., K, N); batch dims broadcast as in NumPy (up to
4 of them); the result is a fresh C-contiguous (..., M, N) array. Operands are read through
their strides, so a transposed view (``Aᵀ·G``, ``G·Bᵀ``) never materialises a copy.

Tiles: a block computes a ``TILE_M x TILE_N`` tile of C with
``(TILE_M / MICRO_M) * (TILE_N / MICRO_N)`` threads (64x64 with 16x16 = 256 threads by
default); each thread owns a ``MICRO_M x MICRO_N`` (4x4) register micro-tile.
Launch shape: grid = (ceil(N / TILE_N), ceil(M / TILE_M), batch), 1-D block.
Memory plan: per step of ``TILE_K`` (16) along K the block stages a TILE_K x TILE_M slab of
A and a TILE_K x TILE_N slab of B in shared memory (2 * 16 * 64 elements = 8 KiB for
float32), each global cell of A read ceil(N / TILE_N) times and of B ceil(M / TILE_M)
times; every thread then does TILE_K rank-1 updates of its micro-tile from registers.
Out-of-range rows/cols/ks are loaded as 0 and never written, so any M, N >= 1 and K >= 0 work
(K = 0 gives zeros, as NumPy does).
Accumulation is in the result dtype.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ._util import MAX_DIMS, cdiv, device_array, flat_view, launch, nb_dtype, offset_of, pad
from .layout import broadcast_strides

TILE_M = 64
TILE_N = 64
TILE_K = 16
MICRO_M = 4
MICRO_N = 4


@cuda.jit(device=True)
def stage_slab(dst, src, off, k0, K, sk, w0, W, sw, tk, width, k_fastest, tid, nthreads, zero):
    """dst[kk, ww] = src[off + (k0 + kk) * sk + (w0 + ww) * sw] for the tk x width slab, zero outside
    the K x W matrix; the block's threads share the cells, consecutive threads on kk when
    ``k_fastest`` (else on ww) so that their reads are consecutive in memory."""
    for cell in range(tid, tk * width, nthreads):
        if k_fastest:
            kk = cell % tk
            ww = cell // tk
        else:
            ww = cell % width
            kk = cell // width
        if w0 + ww < W and k0 + kk < K:
            dst[kk, ww] = src[off + (k0 + kk) * sk + (w0 + ww) * sw]
        else:
            dst[kk, ww] = zero


@functools.lru_cache(maxsize=None)
def _matmul_kernel(dtype, tm: int, tn: int, tk: int, rm: int, rn: int):
    numba_dtype = nb_dtype(dtype)
    tx_n = tn // rn
    nthreads = (tm // rm) * tx_n
    rmn = rm * rn  # a local array's size must be a compile-time constant: a closure int, not an expression
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def matmul_kernel(c, a, b, M, N, K, bshape, abst, bbst, sam, sak, sbk, sbn):
        """C tile (blockIdx.y, blockIdx.x) of batch blockIdx.z: tm x tn (TILE_M x TILE_N) with
        (tm / rm) * (tn / rn) threads, each owning an rm x rn (MICRO_M x MICRO_N) register micro-tile.
        Per tk (TILE_K) step: A (tk x tm) and B (tk x tn) slabs staged zero-padded in shared memory,
        then tk rank-1 updates from local arrays; each C cell written once."""
        As = cuda.shared.array((tk, tm), numba_dtype)
        Bs = cuda.shared.array((tk, tn), numba_dtype)
        acc = cuda.local.array(rmn, numba_dtype)
        ar = cuda.local.array(rm, numba_dtype)
        br = cuda.local.array(rn, numba_dtype)
        tid = cuda.threadIdx.x
        tx = tid % tx_n
        ty = tid // tx_n
        m0 = cuda.blockIdx.y * tm
        n0 = cuda.blockIdx.x * tn
        bz = cuda.blockIdx.z
        aoff = offset_of(bz, bshape, abst)
        boff = offset_of(bz, bshape, bbst)
        for i in range(rmn):
            acc[i] = zero
        for k0 in range(0, K, tk):
            # stage the A and B slabs (zero-padded outside the matrices)
            # A: consecutive threads walk k (a row of A is contiguous when sak = 1);
            # B: consecutive threads walk n (a row of B is contiguous when sbn = 1)
            stage_slab(As, a, aoff, k0, K, sak, m0, M, sam, tk, tm, True, tid, nthreads, zero)
            stage_slab(Bs, b, boff, k0, K, sbk, n0, N, sbn, tk, tn, False, tid, nthreads, zero)
            cuda.syncthreads()
            for kk in range(tk):
                for i in range(rm):
                    ar[i] = As[kk, ty * rm + i]
                for j in range(rn):
                    br[j] = Bs[kk, tx * rn + j]
                for i in range(rm):
                    for j in range(rn):
                        acc[i * rn + j] += ar[i] * br[j]
            cuda.syncthreads()
        cbase = bz * M * N
        for i in range(rm):
            m = m0 + ty * rm + i
            if m < M:
                for j in range(rn):
                    n = n0 + tx * rn + j
                    if n < N:
                        c[cbase + m * N + n] = acc[i * rn + j]

    return matmul_kernel, nthreads


def matmul(a, b):
    """``a @ b`` for device arrays of rank >= 2 (any non-negative strides)."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError("matmul needs arrays of rank >= 2 (reshape vectors first)")
    if (TILE_M % MICRO_M) or (TILE_N % MICRO_N):
        raise ValueError("TILE_M/TILE_N must be multiples of MICRO_M/MICRO_N")
    af, ast = flat_view(a)
    bf, bst = flat_view(b)
    ashape, bshape = tuple(a.shape), tuple(b.shape)  # the simulator's shape has no negative indexing
    M, K, Kb, N = ashape[-2], ashape[-1], bshape[-2], bshape[-1]
    if K != Kb:
        raise ValueError(f"matmul: inner dims differ ({K} vs {Kb})")
    batch = np.broadcast_shapes(ashape[:-2], bshape[:-2])
    if len(batch) > MAX_DIMS - 2:
        raise ValueError("at most 4 batch dims")
    nb = int(np.prod(batch, dtype=np.int64))
    dtype = np.result_type(a.dtype, b.dtype)
    c = device_array(tuple(batch) + (M, N), dtype)
    if nb and M and N:  # K == 0 runs no K step: every cell of C is written as 0
        kern, nthreads = _matmul_kernel(dtype, TILE_M, TILE_N, TILE_K, MICRO_M, MICRO_N)
        abst = pad(broadcast_strides(ashape[:-2], ast[:-2], batch))
        bbst = pad(broadcast_strides(bshape[:-2], bst[:-2], batch))
        grid = (cdiv(N, TILE_N), cdiv(M, TILE_M), nb)
        launch(kern, grid, nthreads, c.reshape(c.size), af, bf, M, N, K, pad(batch, 1), abst, bbst,
               ast[-2], ast[-1], bst[-2], bst[-1])
    return c
