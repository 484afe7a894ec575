"""Batched matmul ``C = A @ B`` with broadcast batch dims.

Shapes: ``a`` is (..., M, K) and ``b`` is (..., K, N); batch dims broadcast as in NumPy (up to
4 of them); the result is a fresh C-contiguous (..., M, N) array. Operands are read through
their strides, so a transposed view (``Aᵀ·G``, ``G·Bᵀ``) never materialises a copy.

Tiles: a block computes a ``TILE_M x TILE_N`` tile of C (128 x 128; 64 x 64 with 4 x 4 micro-tiles
for a product too small to give ``WAVE_BLOCKS`` blocks of the big tile) with
``(TILE_M / MICRO_M) * (TILE_N / MICRO_N)`` threads (16 x 16 = 256); each thread owns a
``MICRO_M x MICRO_N`` (8 x 8) register micro-tile: rows ty, ty + TILE_M / MICRO_M, ... and columns
tx, tx + TILE_N / MICRO_N, ... of the block tile (strided, so that neighbouring threads read
neighbouring shared-memory words and write neighbouring columns of C). All tile sizes are
compile-time constants: the micro-tile and its two operand fragments live in registers.
Launch shape: grid = (ceil(N / TILE_N), ceil(M / TILE_M), batch), 1-D block.
Memory plan: per step of ``TILE_K`` (8) along K the block stages a TILE_K x TILE_M slab of A and a
TILE_K x TILE_N slab of B in shared memory, each slab row padded by ``32 / TILE_K`` elements (4:
rows of TILE_M + 4 words). A warp staging along k covers TILE_K k's times 32 / TILE_K columns;
with that pitch the word kk * (TILE_M + 4) + ww falls in bank 4 * kk + ww, a different bank for
each of the 32 threads, so staging is free of bank conflicts (a pitch of TILE_M + 1 would put up
to 4 threads on one bank); staging along m / n writes consecutive words; 2 * 8 * 132 elements =
8.3 KiB for float32. Each operand is staged along its unit stride (consecutive threads
read consecutive addresses: along k for a row-major A or a transposed B, along m / n otherwise;
along k for a matrix-vector product), decided per launch from the strides. Each global cell of A is read ceil(N / TILE_N) times and of B
ceil(M / TILE_M) times; every thread then does TILE_K rank-1 updates of its micro-tile from
registers (MICRO_M + MICRO_N shared loads for MICRO_M * MICRO_N fused multiply-adds).
Index math inside the tile (thread, cell and batch decoding) is 32-bit unsigned; only global
offsets are 64-bit, so the kernel has no 64-bit division.
Out-of-range rows/cols/ks are loaded as 0 and never written, so any M, N >= 1 and K >= 0 work
(K = 0 gives zeros, as NumPy does). Accumulation is in the result dtype.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda, int64, uint32

from ._util import MAX_DIMS, cdiv, device_array, flat_view, launch, nb_dtype, pad
from .layout import broadcast_strides

TILE_M = 128
TILE_N = 128
TILE_K = 8
MICRO_M = 8
MICRO_N = 8
# Products whose big-tile grid has fewer blocks use half-size tiles: two blocks of the big tile fit
# on an SM (127 registers x 256 threads), so 264 fill an H100's 132 SMs once.
WAVE_BLOCKS = 264


@cuda.jit(device=True)
def batch_offset(bz, shape, strides):
    """Offset of batch ``bz`` (uint32, C order over the MAX_DIMS-tuple ``shape``) under ``strides``;
    the index is decoded in 32-bit arithmetic (a grid's z extent is below 2**16)."""
    off = int64(0)
    rem = bz
    for k in range(MAX_DIMS - 1, -1, -1):
        n = uint32(shape[k])
        off += int64(rem % n) * strides[k]
        rem = rem // n
    return off


@functools.lru_cache(maxsize=None)
def _matmul_kernel(dtype, tm: int, tn: int, tk: int, rm: int, rn: int):
    numba_dtype = nb_dtype(dtype)
    tx_n, ty_n = tn // rn, tm // rm  # threads along n and along m
    nthreads = tx_n * ty_n
    rmn = rm * rn  # a local array's size must be a compile-time constant: a closure int, not an expression
    a_loads, b_loads = cdiv(tk * tm, nthreads), cdiv(tk * tn, nthreads)  # cells each thread stages
    u32 = np.uint32
    tk_u, tm_u, tn_u, tx_u, ty_u, nthreads_u = u32(tk), u32(tm), u32(tn), u32(tx_n), u32(ty_n), u32(nthreads)
    a_cells, b_cells = u32(tk * tm), u32(tk * tn)
    # the slab pitch: tm + 32 / tk words puts the 32 threads of a warp staging along k in 32 banks
    tm_pad, tn_pad = tm + max(1, 32 // tk), tn + max(1, 32 // tk)
    zero = np.dtype(dtype).type(0)

    @cuda.jit(device=True)
    def stage(dst, src, off, k0, K, sk, w0, W, sw, width, cells, loads, k_fastest, tid):
        """dst[kk, ww] = src[off + (k0 + kk) * sk + (w0 + ww) * sw] for the tk x width slab, zero
        outside the K x W matrix; consecutive threads take consecutive kk when ``k_fastest`` (else
        consecutive ww), i.e. consecutive addresses when that is the unit stride."""
        for c in range(loads):
            cell = tid + uint32(c) * nthreads_u
            if cell < cells:
                if k_fastest:
                    kk = cell % tk_u
                    ww = cell // tk_u
                else:
                    ww = cell % width
                    kk = cell // width
                k = k0 + kk
                w = w0 + ww
                v = zero
                if k < K and w < W:
                    v = src[off + k * sk + w * sw]
                dst[kk, ww] = v

    @cuda.jit
    def matmul_kernel(c, a, b, M, N, K, bshape, abst, bbst, sam, sak, sbk, sbn):
        """C tile (blockIdx.y, blockIdx.x) of batch blockIdx.z: tm x tn (TILE_M x TILE_N) with
        (tm / rm) * (tn / rn) threads, each owning an rm x rn (MICRO_M x MICRO_N) register
        micro-tile (rows ty + i * tm / rm, columns tx + j * tn / rn). Per tk (TILE_K) step: A and B
        slabs staged zero-padded along their unit strides in shared memory (rows of tm / tn plus
        32 / tk words: no bank conflicts), then tk rank-1 updates from registers; each C cell written once."""
        As = cuda.shared.array((tk, tm_pad), numba_dtype)
        Bs = cuda.shared.array((tk, tn_pad), numba_dtype)
        acc = cuda.local.array(rmn, numba_dtype)
        ar = cuda.local.array(rm, numba_dtype)
        br = cuda.local.array(rn, numba_dtype)
        tid = uint32(cuda.threadIdx.x)
        tx = tid % tx_u
        ty = tid // tx_u
        m0 = int64(cuda.blockIdx.y) * tm
        n0 = int64(cuda.blockIdx.x) * tn
        bz = uint32(cuda.blockIdx.z)
        aoff = batch_offset(bz, bshape, abst)
        boff = batch_offset(bz, bshape, bbst)
        # stage along k for a row-major A / a transposed B (k is the unit stride), and for a
        # one-row A / one-column B (no other direction has more than one cell in range)
        a_k_fastest = sak == 1 or M == 1
        b_k_fastest = (sbk == 1 and sbn != 1) or N == 1
        for i in range(rmn):
            acc[i] = zero
        for k0 in range(0, K, tk):
            stage(As, a, aoff, k0, K, sak, m0, M, sam, tm_u, a_cells, a_loads, a_k_fastest, tid)
            stage(Bs, b, boff, k0, K, sbk, n0, N, sbn, tn_u, b_cells, b_loads, b_k_fastest, tid)
            cuda.syncthreads()
            for kk in range(tk):
                for i in range(rm):
                    ar[i] = As[kk, ty + uint32(i) * ty_u]
                for j in range(rn):
                    br[j] = Bs[kk, tx + uint32(j) * tx_u]
                for i in range(rm):
                    for j in range(rn):
                        acc[i * rn + j] += ar[i] * br[j]
            cuda.syncthreads()
        cbase = int64(bz) * M * N
        for i in range(rm):
            m = m0 + ty + uint32(i) * ty_u
            if m < M:
                for j in range(rn):
                    n = n0 + tx + uint32(j) * tx_u
                    if n < N:
                        c[cbase + m * N + n] = acc[i * rn + j]

    return matmul_kernel, nthreads


def tile_configs():
    """The two tilings ``(tm, tn, tk, rm, rn)``: the ``TILE_*`` / ``MICRO_*`` constants (read at call
    time), and for products too small to fill the device with those, half the tile and half the
    micro-tile each way (the same thread count, four times the blocks)."""
    return ((TILE_M, TILE_N, TILE_K, MICRO_M, MICRO_N),
            (TILE_M // 2, TILE_N // 2, TILE_K, max(1, MICRO_M // 2), max(1, MICRO_N // 2)))


def tiles_for(M: int, N: int, nb: int):
    """The big tiling when it gives at least ``WAVE_BLOCKS`` blocks, else the small one."""
    big, small = tile_configs()
    return big if cdiv(M, big[0]) * cdiv(N, big[1]) * nb >= WAVE_BLOCKS else small


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
        tiles = tiles_for(M, N, nb)
        kern, nthreads = _matmul_kernel(dtype, *tiles)
        abst = pad(broadcast_strides(ashape[:-2], ast[:-2], batch))
        bbst = pad(broadcast_strides(bshape[:-2], bst[:-2], batch))
        grid = (cdiv(N, tiles[1]), cdiv(M, tiles[0]), nb)
        launch(kern, grid, nthreads, c.reshape(c.size), af, bf, M, N, K, pad(batch, 1), abst, bbst,
               ast[-2], ast[-1], bst[-2], bst[-1])
    return c
