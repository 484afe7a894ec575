"""Sequence-parallel attention: each of N ranks holds one block of a long sequence's queries,
keys and values; the key/value blocks travel around a ring of ranks.

Forward, on rank r with query block Q_r (positions r·T .. (r+1)·T − 1):

    for s = 0 .. N−1:    j = (r − s) mod N                   (the key/value block held now)
        O_j, L_j = fused_attention(Q_r, K_j, V_j)            (the CPU tiled kernel, with its row
                                                              log-sum-exp L_j)
        L = logaddexp(L, L_j);  O = O·exp(L_old − L) + O_j·exp(L_j − L)
        pass (K_j, V_j) to rank r+1, receive (K_{j−1}, V_{j−1}) from rank r−1

which is exactly how the tiles of the flash kernel merge inside one process. With
``is_causal`` the blocks after r are skipped (every key there is in the future of every query
of Q_r) and block r itself is causally masked.

Backward uses the merged O and L: the kernel's backward with the *global* O and L gives each
block's exact share (P = exp(S − L), D = rowsum(dO·O)), so dQ_r is summed locally while the
partial dK_j, dV_j travel around the ring with their block and arrive home after N hops.

Messages are MPI ``Isend``/``Irecv`` pairs — a ``Sendrecv`` split in two. In the forward pass
they start before a block's attention and are waited for after it, so the transfer overlaps
the computation; in backward a block and its gradient sums move after the block's kernel has
run, so that only one set of (K, V, dK, dV) is in memory while the kernel runs (K, V move
first, then dK, dV). Memory per
rank grows with the block, n/N: see docs/distributed.md for the measured figures.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd.function import Function
from ..tensor import Tensor
from ._mpi import host_copy, mpi
from .process_group import _comm, _signature, check_same_across_ranks


def _host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else host_copy(a)


def _like(h: np.ndarray, xp):
    """A host array back on the device of the backend ``xp`` (the same array on the CPU)."""
    return h if xp.ndarray is np.ndarray else xp.asarray(h)


class _Ring:
    """One ring exchange at a time: ``start(arrays)`` sends each array on to the next rank (one
    message each, straight from its memory: no packing copy), ``finish()`` returns the arrays
    received from the previous rank, in fresh buffers of the same shapes and dtypes."""

    def __init__(self, comm) -> None:
        self.comm = comm
        r, n = comm.Get_rank(), comm.Get_size()
        self.next, self.prev = (r + 1) % n, (r - 1) % n

    def start(self, arrays) -> None:
        send = [np.ascontiguousarray(_host(a)) for a in arrays]
        self.recv = [np.empty_like(h) for h in send]
        self.reqs = [self.comm.Irecv(h, source=self.prev, tag=i) for i, h in enumerate(self.recv)]
        self.reqs += [self.comm.Isend(h, dest=self.next, tag=i) for i, h in enumerate(send)]

    def finish(self) -> list:
        mpi().Request.Waitall(self.reqs)
        self.reqs = []
        out, self.recv = self.recv, None
        return out


def _merge(o, lse, o_j, lse_j):
    """Two partial softmax-attention results over disjoint key sets, as one (row log-sum-exp
    merge); ``o`` is updated in place and ``o_j`` used as scratch (no block-sized temporaries)."""
    with np.errstate(invalid="ignore", over="ignore"):
        new = np.logaddexp(lse, lse_j)
        a = np.where(np.isneginf(new), 0.0, np.exp(lse - new)).astype(o.dtype)
        b = np.where(np.isneginf(new), 0.0, np.exp(lse_j - new)).astype(o.dtype)
    o *= a[..., None]
    np.multiply(o_j, b[..., None], out=o_j)
    o += o_j
    return o, new.astype(lse.dtype)


class RingAttention(Function):
    """Forward/backward of ring attention on (B, T, d) blocks; see the module docstring.

    It stays here rather than in ``minitrans/ops``: both passes are collectives (every rank
    must call them, in the same order) built on this module's MPI ring, so the op belongs to
    the distributed layer, which ``ops`` must not depend on."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal, scale, comm):
        ctx.is_causal, ctx.scale, ctx.comm = is_causal, scale, comm
        o, lse = _ring_forward(ctx.xp, q, k, v, is_causal, scale, comm)
        ctx.save_for_backward(q, k, v, o, lse)
        return o

    @staticmethod
    def backward(ctx, g):
        grads = _ring_backward(ctx.xp, *ctx.saved_arrays, g, ctx.is_causal, ctx.scale, ctx.comm)
        return grads + (None, None, None)


def _ring_forward(xp, q, k, v, is_causal, scale, comm):
    """(output, row log-sum-exp) of this rank's queries against every rank's keys and values:
    the K/V blocks travel round the ring while each one is attended to."""
    r, n = comm.Get_rank(), comm.Get_size()
    ring = _Ring(comm)
    o = lse = None
    kv = (k, v)
    for s in range(n):
        j = (r - s) % n
        if s < n - 1:
            ring.start(kv)
        if not (is_causal and j > r):                 # a block wholly in the future: skipped
            o_j, lse_j = xp.attention_forward(q, kv[0], kv[1], None, bool(is_causal and j == r), scale)
            o_j, lse_j = _host(o_j), _host(lse_j)
            o, lse = (o_j, lse_j) if o is None else _merge(o, lse, o_j, lse_j)
        if s < n - 1:
            kv = tuple(_like(a, xp) for a in ring.finish())
    return _like(np.ascontiguousarray(o), xp), _like(np.ascontiguousarray(lse), xp)


def _ring_backward(xp, q, k, v, o, lse, g, is_causal, scale, comm):
    """(dq, dk, dv) of this rank's blocks: each K/V block travels round the ring with the sums
    of its gradients, and is back home with them after N hops."""
    r, n = comm.Get_rank(), comm.Get_size()
    ring = _Ring(comm)
    do = xp.ascontiguousarray(g)
    dq = None
    kj, vj, dk, dv = k, v, None, None          # the block held now and its gradient sums so far
    for s in range(n):
        j = (r - s) % n
        if not (is_causal and j > r):
            dq_j, dk_j, dv_j = (_host(a) for a in xp.attention_backward(
                q, kj, vj, o, lse, do, None, bool(is_causal and j == r), scale))
            dq = dq_j if dq is None else _add(dq, dq_j)
            dk = dk_j if dk is None else _add(dk, dk_j)
            dv = dv_j if dv is None else _add(dv, dv_j)
            del dq_j, dk_j, dv_j
        if dk is None:                         # no rank has touched this block yet
            dk, dv = np.zeros(kj.shape, np.dtype(kj.dtype)), np.zeros(vj.shape, np.dtype(vj.dtype))
        # pass the block with its sums on, after the compute (only one block set is in memory
        # while the kernel runs) and in two steps, K, V then dK, dV (at most 1.5 sets in
        # memory while they move); after N hops the sums are back on the block's own rank
        if s < n - 1:
            ring.start((kj, vj))
            kj, vj = (_like(a, xp) for a in ring.finish())
        ring.start((dk, dv))
        dk, dv = ring.finish()
    if dq is None:
        dq = np.zeros(q.shape, np.dtype(q.dtype))
    return _like(dq, xp), _like(dk, xp), _like(dv, xp)


def _add(acc, x):
    acc += x
    return acc


def ring_attention(query: Tensor, key: Tensor, value: Tensor, is_causal: bool = False,
                   scale: float | None = None) -> Tensor:
    """softmax(Q·Kᵀ·scale)·V over a sequence split in equal blocks across the ranks.

    Every rank passes its block, shaped (..., T, d) (rank r holds positions r·T .. (r+1)·T − 1)
    and gets its block of the output, as ``scaled_dot_product_attention`` on the whole
    sequence would give it; differentiable (backward is a collective too: every rank must
    call it). Every rank must pass the same shapes and dtype.
    """
    comm = _comm()
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"ring_attention: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim < 2 or not t.dtype.is_floating_point:
            raise ValueError(f"ring_attention: {name} must be a floating-point (..., T, d) tensor, got shape "
                             f"{tuple(t.shape)} and dtype {t.dtype}")
    if not (query.dtype is key.dtype is value.dtype):
        raise TypeError(f"ring_attention: query, key and value dtypes differ: {query.dtype}, {key.dtype}, "
                        f"{value.dtype}")
    lead, (T, d) = tuple(query.shape[:-2]), query.shape[-2:]
    if tuple(key.shape[:-2]) != lead or tuple(value.shape[:-2]) != lead:
        raise ValueError(f"ring_attention: batch dims of query {tuple(query.shape)}, key {tuple(key.shape)} and "
                         f"value {tuple(value.shape)} differ")
    if key.shape[-1] != d:
        raise ValueError(f"ring_attention: query {tuple(query.shape)} and key {tuple(key.shape)} differ in the "
                         f"last (head) dim")
    Tk = key.shape[-2]
    if value.shape[-2] != Tk:
        raise ValueError(f"ring_attention: key {tuple(key.shape)} and value {tuple(value.shape)} differ in "
                         f"sequence length")
    if is_causal and Tk != T:
        raise ValueError(f"ring_attention: is_causal needs equal query and key blocks, got {T} queries and "
                         f"{Tk} keys per rank")
    check_same_across_ranks("ring_attention", "the (query, key, value) block",
                            tuple(_signature(t) for t in (query, key, value)), comm)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    B = int(np.prod(lead, dtype=np.int64))
    q3, k3, v3 = (t.reshape(B, t.shape[-2], t.shape[-1]).contiguous() for t in (query, key, value))
    o = RingAttention.apply(q3, k3, v3, bool(is_causal), scale, comm)
    return o.reshape(*lead, T, value.shape[-1])
