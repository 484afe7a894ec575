"""Multi-head self-attention read straight from the packed in-projection, for T <= PACKED_MAX_T.

``qkv`` is (B, T, 3·E) laid out [Q | K | V], each part [head 0 | head 1 | ...] of ``hd = E / H``
columns, as one in-projection GEMM makes it. The forward returns the heads' outputs side by side,
(B, T, E), and the row log-sum-exp (B·H, T); the backward takes the gradient of that output and
returns the (B, T, 3·E) gradient of ``qkv``.

No copies of Q, K, V or of the results: Q, K and V are strided views of ``qkv`` as (B, H, T, hd)
stacks (row stride 3·E, unit column stride), which BLAS reads as they are, and the products write
straight into strided views of the (B, T, E) output and of the (B, T, 3·E) gradient. What the
composed path spent on three head-split copies, the merge copy and the gradient concatenation
(≈ 1.1 ms of its 5.5 ms per W1 layer at 1 thread) is gone.

Forward, per chunk of batch items: Sᵀ = K·Qᵀ (one GEMM per (batch, head) unit, BLAS); one Numba
pass over the chunk's units turns Sᵀ into Pᵀ in place (scale, bias, causal mask, each query's max,
then ONE vectorised exp over the unit's whole T×T block — masked entries are −inf and give exactly
0 — then each query's sum, 1/sum and lse); O = P·V (BLAS, Pᵀ read transposed) into the output view.
Backward: dPᵀ = V·dOᵀ (BLAS); one Numba pass makes scale·dSᵀ = scale·(P ⊙ (dP − rowsum(dO ⊙ O)))ᵀ
in the dPᵀ buffer; then dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dO (BLAS) into the three column blocks of
the gradient. Pᵀ is the forward's, kept while it is small (``_keeps_probs``), else recomputed
from Sᵀ and the saved lse by the same pass.

Why Sᵀ and not S: a query's max, sum and lse are then column reductions, computed elementwise
along contiguous key rows of one fixed length T, which vectorise; on S they are row reductions of a
varying length (i + 1 keys when causal), which LLVM left mostly to scalar remainder loops (the row
pass took 3× its arithmetic). Why one exp over the whole unit: on rows of ~32 keys the per-row
set-up of the exp dominated; the causal half it computes in vain is cheaper than that.

Longer sequences (WHOLE_UNIT_T < T <= PACKED_MAX_T): each (batch, head) unit's queries are cut
into QUERY_BLOCKS row blocks i0 .. i1 − 1. A causal block needs keys 0 .. i1 − 1 only, so its Sᵀ
block is K[:i1]·Q[i0:i1]ᵀ and the masked upper part of the scores is never computed (8 blocks: 56 %
of T² instead of 100 %). The same passes run on the block (the query offset i0 for the mask and
the bias); dQ of the block is complete, its dK and dV shares go to keys 0 .. i1 − 1: the last block,
which sees every key, runs first and writes them, the others add theirs. P is always recomputed
from lse there. The work item is a piece of one batch item's heads (``_head_pieces``): the products
of a block run stacked over the piece's heads, one Python pass per piece and block (per unit, the
Python calls cost 15 % at T = 256). Tried and dropped: a fused per-row variant (shift, exp and
column sums row by row, the 1/sum folded into O; the backward's exp and dS in one pass) was slower
at T 256-512: the per-row exp on 64-128 queries costs more than the passes it saves.

Memory plan: short sequences, chunks sized so that one chunk's score block (and dPᵀ) stays in L2
(``CHUNK_BYTES``) between the GEMM that writes it, the Numba pass and the GEMMs that read it; P
(B·H·T²) is kept for the backward only while it is at most twice qkv (``_keeps_probs``). Longer
sequences: per thread, one Sᵀ block and one dPᵀ block of (heads in a piece) × T × rows, rows =
max(QUERY_ROWS_MIN, ⌈T / QUERY_BLOCKS⌉), each at most CHUNK_BYTES unless one head alone is larger
(512 KiB at T = 1024 in float32), and a (heads in a piece, T, hd) buffer; nothing of size B·H·T².
Threads: the chunks are spread over minitrans's threads (Numba's thread count), the pieces handed
out one at a time (a thread the machine slows takes fewer); each BLAS call single-threaded and the
Numba passes `nogil`, as in matmul.py. Each chunk or piece is computed the same way on any thread,
so the results do not depend on the thread count.
"""
from __future__ import annotations

import itertools
import threading

import numpy as np
from numba import get_num_threads, njit

from minitrans.threads import blas_is_single_threaded, worker_pool

from .softmax import FASTMATH, exp_scalar, recip

__all__ = ["PACKED_MAX_T", "packed_attention_forward", "packed_attention_backward"]

CHUNK_BYTES = 1 << 19      # score bytes per chunk of batch items: S (and dP) stay in L2 between passes
PACKED_MAX_T = 1024        # the packed kernels' longest sequence; longer ones take the tiled kernels
WHOLE_UNIT_T = 128         # up to here, one block per (batch, head) unit, several units per chunk
QUERY_BLOCKS = 8           # past WHOLE_UNIT_T, each unit's queries in about this many row blocks ...
QUERY_ROWS_MIN = 64        # ... of at least this many rows


@njit(inline="always", fastmath=FASTMATH)
def _score(row, i, j, q0, bias_t, bias_unit, has_bias, causal, scale):
    """scale·row[i] (+ the bias of key j, query q0 + i), or -inf where a causal query q0 + i < j."""
    val = row[i] * scale
    if has_bias:
        val += bias_t[bias_unit, j, q0 + i]
    return -np.inf if causal and q0 + i < j else val


@njit(inline="always", fastmath=FASTMATH)
def _masked_scores(block, q0, bias_t, bias_unit, has_bias, causal, scale, shift, m):
    """block (nk, nq) holds Sᵀ for queries q0 .. q0 + nq − 1: row j = key j, column i = query q0 + i.
    In place: scale·Sᵀ (+ biasᵀ), -inf where a causal query q0 + i < j must not see key j; then minus
    ``shift[i]`` per column (in the same pass), or, when m is given (m.size > 0), minus each column's
    max, which is stored in m (-inf for a column with no visible key; its entries stay -inf). Every
    loop is elementwise over a contiguous row: vectorised."""
    nk, nq = block.shape
    if m.shape[0] == 0:                                        # a known shift: one pass
        for j in range(nk):
            row = block[j]
            for i in range(nq):
                sh = shift[i]
                val = _score(row, i, j, q0, bias_t, bias_unit, has_bias, causal, scale)
                row[i] = val - sh if sh != -np.inf else -np.inf
        return
    m[:nq] = -np.inf
    for j in range(nk):
        row = block[j]
        for i in range(nq):
            val = _score(row, i, j, q0, bias_t, bias_unit, has_bias, causal, scale)
            row[i] = val
            mi = m[i]
            m[i] = mi if mi > val else val
    for j in range(nk):
        row = block[j]
        for i in range(nq):
            sh = m[i]
            row[i] = row[i] - sh if sh != -np.inf else -np.inf


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _probs(scores_t, q0, bias_t, has_bias, u0, causal, scale, lse):
    """In place: scores_t (n, nk, nq), the raw transposed scores K·Qᵀ of units u0 .. u0 + n − 1 for
    keys 0 .. nk − 1 and queries q0 .. q0 + nq − 1, becomes Pᵀ, P = softmax(scale·S + bias) by query
    rows (causal: keys j > i get 0; a causal block needs no key past its last query); lse (n, nq)
    written. bias_t (1 or all units, T, T) is the bias transposed like scores_t."""
    n, nk, nq = scores_t.shape
    m = np.empty(nq, scores_t.dtype)
    tot = np.empty(nq, scores_t.dtype)
    for k in range(n):
        unit = scores_t[k]
        _masked_scores(unit, q0, bias_t, u0 + k if bias_t.shape[0] > 1 else 0, has_bias, causal, scale, m, m)
        tot[:] = 0
        for j in range(nk):                 # exp and the per-query sums in one pass; -inf gives 0
            row = unit[j]
            for i in range(nq):
                e = exp_scalar(row[i])
                row[i] = e
                tot[i] += e
        for i in range(nq):
            if tot[i] > 0:
                lse[k, i] = m[i] + np.log(tot[i])
                tot[i] = recip(tot[i])
            else:                                              # every key masked: P = 0, lse = -inf
                lse[k, i] = -np.inf
        for j in range(nk):
            row = unit[j]
            for i in range(nq):
                row[i] *= tot[i]


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _dscores(probs_t, dprobs_t, recompute, bias_t, has_bias, u0, q0, heads, causal, scale, lse, out, g):
    """In place, for units u0 .. u0 + n − 1 and queries q0 .. q0 + nq − 1 (blocks (n, nk, nq)):
    dprobs_t (V·dOᵀ = dPᵀ) -> scale·(P ⊙ (dP − D))ᵀ with D_i = dO_i·O_i from the (B, T, E) out and g.
    probs_t is Pᵀ as the forward left it, or, when ``recompute``, the raw K·Qᵀ, turned into
    Pᵀ = exp(scale·S + bias − lse)ᵀ in place first."""
    n, nk, nq = probs_t.shape
    hd = out.shape[2] // heads
    dots = np.empty(nq, probs_t.dtype)
    none = np.empty(0, probs_t.dtype)
    for k in range(n):
        u = u0 + k
        b, col = u // heads, (u % heads) * hd
        unit, dunit = probs_t[k], dprobs_t[k]
        if recompute:
            _masked_scores(unit, q0, bias_t, u if bias_t.shape[0] > 1 else 0, has_bias, causal, scale,
                           lse[u, q0:q0 + nq], none)
        for i in range(nq):
            d_i = scale - scale
            orow, grow = out[b, q0 + i], g[b, q0 + i]
            for c in range(hd):
                d_i += grow[col + c] * orow[col + c]
            dots[i] = d_i
        for j in range(nk):
            prow, drow = unit[j], dunit[j]
            if recompute:                   # Pᵀ = exp of the shifted scores; masked entries give 0
                for i in range(nq):
                    prow[i] = exp_scalar(prow[i])
            for i in range(nq):
                drow[i] = prow[i] * (drow[i] - dots[i]) * scale


# ---------------------------------------------------------------------------- driver
def _heads_view(a, heads: int, part: int, parts: int):
    """Part ``part`` of ``parts`` of the last axis of a (B, T, parts·E) array, as a (B, H, T, hd) view."""
    B, T, width = a.shape
    hd = width // (parts * heads)
    return a.reshape(B, T, parts * heads, hd)[:, :, part * heads:(part + 1) * heads].transpose(0, 2, 1, 3)


def _chunks(B: int, heads: int, T: int, itemsize: int) -> list[tuple[int, int]]:
    per = max(1, CHUNK_BYTES // max(1, heads * T * T * itemsize))
    return [(b0, min(B, b0 + per)) for b0 in range(0, B, per)]


def _run(work, chunks) -> None:
    """work(b0, b1) for every chunk: on the calling thread alone when minitrans runs on one thread (or
    OpenBLAS threads each call itself), else the chunks cut into one run per thread on minitrans's
    worker pool, the caller doing the first run and taking back any run no worker has started."""
    threads = min(get_num_threads(), len(chunks))
    if threads <= 1 or threading.current_thread().name.startswith("minitrans-") or not blas_is_single_threaded():
        for c in chunks:
            work(*c)
        return
    per = -(-len(chunks) // threads)
    runs = [chunks[i:i + per] for i in range(0, len(chunks), per)]

    def run(group):
        for c in group:
            work(*c)
    futures = [worker_pool(len(runs) - 1).submit(run, group) for group in runs[1:]]
    run(runs[0])
    for f, group in zip(futures, runs[1:]):
        if f.cancel():
            run(group)
        else:
            f.result()


def _checked(qkv, heads, bias):
    """qkv and the bias (None, or (1 or B·H, T, T) in qkv's dtype; a bias broadcast over the units
    with stride 0 is read as its one (T, T) matrix); raises on a bad shape, dtype or head count."""
    if not isinstance(qkv, np.ndarray) or qkv.dtype not in (np.float32, np.float64):
        raise TypeError(f"packed attention: qkv must be a float32 or float64 array, got "
                        f"{getattr(qkv, 'dtype', type(qkv).__name__)}")
    if qkv.ndim != 3:
        raise ValueError(f"packed attention: qkv must be (B, T, 3*E), got shape {qkv.shape}")
    B, T, E3 = qkv.shape
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1 or E3 % (3 * heads):
        raise ValueError(f"packed attention: the last axis of qkv ({E3}) must be 3 * heads * head_dim "
                         f"with heads a positive int, got heads={heads!r}")
    if bias is None:
        return np.zeros((1, 1, 1), qkv.dtype), False
    units = B * heads
    if bias.ndim != 3 or bias.shape[0] not in (1, units) or bias.shape[1:] != (T, T):
        raise ValueError(f"packed attention: bias must be (1 or {units}, {T}, {T}), got shape {bias.shape}")
    if bias.shape[0] > 1 and bias.strides[0] == 0:
        bias = bias[:1]
    return np.ascontiguousarray(bias.transpose(0, 2, 1), qkv.dtype), True     # transposed like the kernels' Sᵀ


def _keeps_probs(qkv, heads: int) -> bool:
    """Whether the forward keeps P for the backward: for short sequences (whole-unit blocks), when P
    (B·H·T² elements) is at most twice the size of qkv, the activation the op saves anyway. The backward
    then skips recomputing S = Q·Kᵀ and its exp (~0.45 of its ~1.9 ms per W1 layer at 1 thread); past
    that, memory wins and it recomputes (always for the query-row blocks of longer sequences)."""
    B, T, E3 = qkv.shape
    return T <= WHOLE_UNIT_T and B * heads * T * T <= 2 * qkv.size


def _query_blocks(T: int, causal: bool) -> list[tuple[int, int, int]]:
    """(first query, end query, end key) of each query-row block of a unit, the last block first (it
    sees every key); a causal block stops at its last query's key, skipping the masked upper part."""
    rows = max(QUERY_ROWS_MIN, -(-T // QUERY_BLOCKS))
    return [(i0, min(T, i0 + rows), min(T, i0 + rows) if causal else T) for i0 in range(0, T, rows)][::-1]


def _head_pieces(B: int, heads: int, T: int, causal: bool, itemsize: int) -> list[tuple[int, int, int]]:
    """(batch item, first head, end head): the work items past WHOLE_UNIT_T, each one Python pass over
    the query blocks with stacked products for its heads; as many heads as keep one block of scores
    within CHUNK_BYTES (at least one). The first piece is the largest."""
    blocks = _query_blocks(T, causal)
    per = max(1, min(heads, CHUNK_BYTES // max(1, T * (blocks[-1][1] - blocks[-1][0]) * itemsize)))
    return [(b, h0, min(heads, h0 + per)) for b in range(B) for h0 in range(0, heads, per)]


def _run_units(work, units: int) -> None:
    """work(take) on the calling thread and, where ``_run`` would spread chunks, once more on each
    other minitrans thread: each call allocates its buffers once, then computes the units ``take()``
    hands out (the next one not yet taken; None when none is left), so a thread that the machine
    slows down takes fewer. Which thread computes a unit does not change its result."""
    counter = itertools.count()                                # next() on it is atomic under the GIL

    def take():
        u = next(counter)
        return u if u < units else None
    threads = min(get_num_threads(), units)
    if threads <= 1 or threading.current_thread().name.startswith("minitrans-") or not blas_is_single_threaded():
        work(take)
        return
    futures = [worker_pool(threads - 1).submit(work, take) for _ in range(threads - 1)]
    work(take)
    for f in futures:
        if not f.cancel():                                     # a cancelled one had nothing left to take
            f.result()


def packed_attention_forward(qkv, heads: int, bias, is_causal: bool, scale: float):
    """``(out, lse, probs_t)``: out (B, T, E) the heads' attention outputs side by side, lse (B·H, T),
    and the probabilities transposed, Pᵀ (B, H, T, T), for the backward (None where it would be too
    large to keep: see ``_keeps_probs``)."""
    bias, has_bias = _checked(qkv, heads, bias)
    B, T, E3 = qkv.shape
    dt = qkv.dtype
    out = np.empty((B, T, E3 // 3), dt)
    lse = np.empty((B * heads, T), dt)
    keep = _keeps_probs(qkv, heads)
    probs_t = np.empty((B, heads, T, T), dt) if keep else None
    q, k, v = (_heads_view(qkv, heads, p, 3) for p in range(3))
    o = _heads_view(out, heads, 0, 1)
    scale_dt, causal = dt.type(scale), bool(is_causal)

    def work(b0, b1):
        scores_t = np.matmul(k[b0:b1], q[b0:b1].transpose(0, 1, 3, 2),      # Sᵀ, in the kept buffer
                             out=probs_t[b0:b1] if keep else None)
        _probs(scores_t.reshape(-1, T, T), 0, bias, has_bias, b0 * heads, causal, scale_dt, lse[b0 * heads:b1 * heads])
        np.matmul(scores_t.transpose(0, 1, 3, 2), v[b0:b1], out=o[b0:b1])      # O = P·V

    def long_work(take):
        blocks, pieces = _query_blocks(T, causal), _head_pieces(B, heads, T, causal, dt.itemsize)
        scratch = np.empty(pieces[0][2] * T * (blocks[-1][1] - blocks[-1][0]), dt)
        for b, h0, h1 in map(pieces.__getitem__, iter(take, None)):
            for i0, i1, kend in blocks:
                scores_t = scratch[:(h1 - h0) * kend * (i1 - i0)].reshape(h1 - h0, kend, i1 - i0)
                np.matmul(k[b, h0:h1, :kend], q[b, h0:h1, i0:i1].transpose(0, 2, 1), out=scores_t)   # Sᵀ
                _probs(scores_t, i0, bias, has_bias, b * heads + h0, causal, scale_dt,
                       lse[b * heads + h0:b * heads + h1, i0:i1])
                np.matmul(scores_t.transpose(0, 2, 1), v[b, h0:h1, :kend], out=o[b, h0:h1, i0:i1])   # O = P·V
    if out.size:
        if T > WHOLE_UNIT_T:
            _run_units(long_work, len(_head_pieces(B, heads, T, causal, dt.itemsize)))
        else:
            _run(work, _chunks(B, heads, T, dt.itemsize))
    return out, lse, probs_t


def packed_attention_backward(qkv, out, lse, g, heads: int, bias, is_causal: bool, scale: float, probs_t=None):
    """The (B, T, 3·E) gradient of ``qkv`` from the gradient ``g`` of the forward's ``out``; ``probs_t``
    the forward's Pᵀ when it kept it (only read), else P is recomputed from qkv, bias and lse."""
    bias, has_bias = _checked(qkv, heads, bias)
    B, T, E3 = qkv.shape
    dt = qkv.dtype
    for name, a, shape in (("out", out, (B, T, E3 // 3)), ("g", g, (B, T, E3 // 3)), ("lse", lse, (B * heads, T)),
                           ("probs_t", probs_t, (B, heads, T, T))):
        if a is None and name == "probs_t":
            continue
        if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dt:
            raise ValueError(f"packed attention: {name} must be a {shape} {dt} array, got "
                             f"{getattr(a, 'shape', type(a).__name__)} {getattr(a, 'dtype', '')}")
    out, g, lse = (np.ascontiguousarray(a) for a in (out, g, lse))
    probs_t = None if probs_t is None else np.ascontiguousarray(probs_t)
    dqkv = np.empty_like(qkv, order="C")
    q, k, v = (_heads_view(qkv, heads, p, 3) for p in range(3))
    dq, dk, dv = (_heads_view(dqkv, heads, p, 3) for p in range(3))
    dout = _heads_view(g, heads, 0, 1)
    scale_dt, causal = dt.type(scale), bool(is_causal)

    def work(b0, b1):
        if probs_t is None:                                              # Sᵀ again, made Pᵀ by _dscores
            chunk_probs = np.matmul(k[b0:b1], q[b0:b1].transpose(0, 1, 3, 2))
        else:
            chunk_probs = probs_t[b0:b1]                                 # the forward's Pᵀ, only read
        dprobs_t = np.matmul(v[b0:b1], dout[b0:b1].transpose(0, 1, 3, 2))    # dPᵀ = V·dOᵀ
        _dscores(chunk_probs.reshape(-1, T, T), dprobs_t.reshape(-1, T, T), probs_t is None, bias, has_bias,
                 b0 * heads, 0, heads, causal, scale_dt, lse, out, g)      # dprobs_t -> scale·dSᵀ
        np.matmul(dprobs_t.transpose(0, 1, 3, 2), k[b0:b1], out=dq[b0:b1])   # dQ = dS·K
        np.matmul(dprobs_t, q[b0:b1], out=dk[b0:b1])                         # dK = dSᵀ·Q
        np.matmul(chunk_probs, dout[b0:b1], out=dv[b0:b1])                   # dV = Pᵀ·dO

    def long_work(take):
        blocks, pieces = _query_blocks(T, causal), _head_pieces(B, heads, T, causal, dt.itemsize)
        size = pieces[0][2] * T * (blocks[-1][1] - blocks[-1][0])
        probs_scratch, dprobs_scratch = np.empty(size, dt), np.empty(size, dt)
        part = np.empty((pieces[0][2], T, q.shape[3]), dt)     # one block's share of dK or dV
        for b, h0, h1 in map(pieces.__getitem__, iter(take, None)):
            hs = slice(h0, h1)
            for n, (i0, i1, kend) in enumerate(blocks):
                probs = probs_scratch[:(h1 - h0) * kend * (i1 - i0)].reshape(h1 - h0, kend, i1 - i0)
                dprobs = dprobs_scratch[:probs.size].reshape(probs.shape)
                np.matmul(k[b, hs, :kend], q[b, hs, i0:i1].transpose(0, 2, 1), out=probs)      # Sᵀ, made Pᵀ
                np.matmul(v[b, hs, :kend], dout[b, hs, i0:i1].transpose(0, 2, 1), out=dprobs)  # dPᵀ = V·dOᵀ
                _dscores(probs, dprobs, True, bias, has_bias, b * heads + h0, i0, heads, causal, scale_dt,
                         lse, out, g)                                                            # -> scale·dSᵀ
                np.matmul(dprobs.transpose(0, 2, 1), k[b, hs, :kend], out=dq[b, hs, i0:i1])    # dQ = dS·K
                if n == 0:                                     # the first block sees every key: it writes
                    np.matmul(dprobs, q[b, hs, i0:i1], out=dk[b, hs])                           # dK = dSᵀ·Q
                    np.matmul(probs, dout[b, hs, i0:i1], out=dv[b, hs])                         # dV = Pᵀ·dO
                    continue
                for grad, left, right in ((dk, dprobs, q), (dv, probs, dout)):                 # the others add
                    share = part[:h1 - h0, :kend]
                    np.matmul(left, right[b, hs, i0:i1], out=share)
                    np.add(grad[b, hs, :kend], share, out=grad[b, hs, :kend])
    if dqkv.size:
        if T > WHOLE_UNIT_T:
            _run_units(long_work, len(_head_pieces(B, heads, T, causal, dt.itemsize)))
        else:
            _run(work, _chunks(B, heads, T, dt.itemsize))
    return dqkv
