"""Sequence-parallel attention: each of N ranks holds one block of a long sequence's queries,
keys and values; the key/value blocks travel around a ring of ranks.

Forward, on rank r with query block Q_r (positions r·T .. (r+1)·T − 1):

    for s = 0 .. N−1:    j = (r − s) mod N                   (the key/value block held now)
        merge attention(Q_r, K_j, V_j) into (O, L)            (O the output so far, L its row
                                                              log-sum-exp)
        pass (K_j, V_j) to rank r+1, receive (K_{j−1}, V_{j−1}) from rank r−1

The merge is the flash kernel's online softmax continued from (O, L): on the CPU kernel it
happens in place, tile by tile (``attention_forward(..., out=O, lse=L)``); on other backends
the block's (O_j, L_j) are merged by their log-sum-exp, O·exp(L_old − L) + O_j·exp(L_j − L).
With ``is_causal`` the blocks after r are skipped (every key there is in the future of every
query of Q_r) and block r itself is causally masked.

Backward uses the merged O and L: the kernel's backward with the *global* O and L gives each
block's exact share (P = exp(S − L), D = rowsum(dO·O)); the CPU kernel adds it into the dQ of
this rank and the dK, dV sums of the visiting block in place. dK, dV travel around the ring
with their block and arrive home after N hops.

Messages. Forward: ``Isend``/``Irecv`` started before a block's kernel and waited for after
it (the transfer overlaps the computation), into a fixed pair of buffers reused every hop.
Backward: after a block's kernel, K, V then dK, dV are each replaced *in place* by the
previous rank's (``_Ring.replace``: ``Sendrecv`` a chunk at a time through one small scratch
buffer; MPI's own ``Sendrecv_replace`` would copy the whole message through a hidden buffer).

Memory per rank, in blocks of T × d (T = n/N positions; lse, the kernel's per-thread tiles and
the exchange's chunk are O(T) or fixed, not counted), CPU kernel:

* forward: Q, K, V (the inputs, 3) + O (1) + the visiting K, V (2) and the pair they are
  received into (2; only from the second hop, so not at N = 2) = 8 at most;
* backward: Q, K, V (3) + O (saved, 1) + dO (1) + dQ (1) + the travelling dK, dV sums
  (2; they arrive home as this rank's dK, dV) + the visiting K, V (2) = 10, during a kernel
  and during an exchange alike;

against one process on the whole sequence: Q, K, V + O + dO + dQ, dK, dV = 8 blocks of n
(9 at its peak, when the autograd engine copies a first gradient into a leaf's ``.grad``; on a
rank the engine holds the three gradients and their copies at once, 10 blocks, O freed by then:
as high as the kernel phase). So a rank holds ≈ 10/9 · 1/N of one process; the excess is the
visiting K, V, which a rank needs beside its own K, V (the caller's, never written to).
Measured figures: experiments/RESULTS.md.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd.function import Function
from ..backends import get_kernels
from ..tensor import Tensor
from ._mpi import host_copy, mpi
from .process_group import _comm, _signature, check_same_across_ranks

#: the in-place exchange moves a block in chunks of this many bytes through one scratch buffer
CHUNK_BYTES = 1 << 18


def _host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else host_copy(a)


def _like(h: np.ndarray, xp):
    """A host array back on the device of the backend ``xp`` (the same array on the CPU)."""
    return h if xp.ndarray is np.ndarray else xp.asarray(h)


def _merging_kernel(xp):
    """The CPU flash kernel module when ``xp`` runs it (host arrays, the Numba kernels chosen):
    its entry points merge into given output / gradient buffers in place. None otherwise: then
    the backend's kernel makes each block's result and it is merged on the host."""
    if not (xp.host_memory and get_kernels() == "numba"):
        return None
    # lazy: importing minitrans.distributed must not load (and compile) the Numba kernel modules;
    # with the CPU backend in use they are loaded already
    from ..kernels.cpu import attention
    return attention


class _Ring:
    """Exchanges with the two ring neighbours: each array goes to the next rank while the
    previous rank's arrives (every rank does both at once, so no rank waits on another's send).
    ``start(arrays, into)`` / ``finish()``: non-blocking, into the caller's buffers;
    ``replace(arrays)``: blocking, in place."""

    def __init__(self, comm) -> None:
        self.comm = comm
        r, n = comm.Get_rank(), comm.Get_size()
        self.next, self.prev = (r + 1) % n, (r - 1) % n
        self.reqs, self.scratch = [], None

    def start(self, arrays, into) -> None:
        send = [np.ascontiguousarray(_host(a)) for a in arrays]    # a copy only for device arrays
        self.reqs = [self.comm.Irecv(h, source=self.prev, tag=i) for i, h in enumerate(into)]
        self.reqs += [self.comm.Isend(h, dest=self.next, tag=i) for i, h in enumerate(send)]

    def finish(self) -> None:
        mpi().Request.Waitall(self.reqs)
        self.reqs = []

    def replace(self, arrays) -> None:
        """Each (C-contiguous host) array sent on and overwritten with the previous rank's, one
        chunk of CHUNK_BYTES at a time: a chunk is received into the scratch buffer while the
        same chunk of the array is sent, then copied over it."""
        for i, a in enumerate(arrays):
            flat = a.reshape(-1).view(np.uint8)
            need = min(CHUNK_BYTES, flat.size)
            if self.scratch is None or self.scratch.size < need:
                self.scratch = np.empty(need, np.uint8)
            for c0 in range(0, flat.size, CHUNK_BYTES):
                part = flat[c0:c0 + CHUNK_BYTES]
                tmp = self.scratch[:part.size]
                self.comm.Sendrecv(part, dest=self.next, sendtag=i, recvbuf=tmp, source=self.prev, recvtag=i)
                part[...] = tmp


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


def _attend(kernel, xp, q, kv, o, lse, causal, scale):
    """(o, lse) with the key/value block ``kv`` merged in (the first block when ``o`` is None)."""
    if kernel is not None:
        return kernel.attention_forward(q, kv[0], kv[1], None, causal, scale, out=o, lse=lse)
    o_j, lse_j = (_host(a) for a in xp.attention_forward(q, *(_like(a, xp) for a in kv), None, causal, scale))
    return (o_j, lse_j) if o is None else _merge(o, lse, o_j, lse_j)


def _ring_forward(xp, q, k, v, is_causal, scale, comm):
    """(output, row log-sum-exp) of this rank's queries against every rank's keys and values:
    the K/V blocks travel round the ring while each one is attended to."""
    r, n = comm.Get_rank(), comm.Get_size()
    ring, kernel = _Ring(comm), _merging_kernel(xp)
    o = lse = None
    kv, spare = (k, v), None                    # the block attended now; the pair the next one arrives in
    for s in range(n):
        j = (r - s) % n
        if s < n - 1:
            if spare is None:
                spare = tuple(np.empty(a.shape, np.dtype(a.dtype)) for a in kv)
            ring.start(kv, spare)
        if not (is_causal and j > r):                 # a block wholly in the future: skipped
            o, lse = _attend(kernel, xp, q, kv, o, lse, bool(is_causal and j == r), scale)
        if s < n - 1:
            ring.finish()
            kv, spare = spare, (kv if s > 0 else None)    # this rank's own k, v are never written to
    del kv, spare
    return _like(np.ascontiguousarray(o), xp), _like(np.ascontiguousarray(lse), xp)


def _add_grads(kernel, xp, q, kv, o, lse, do, grads, causal, scale) -> None:
    """Add the gradients of the key/value block ``kv`` into ``grads`` = (dq, dk, dv), in place."""
    if kernel is not None:
        kernel.attention_backward(q, kv[0], kv[1], o, lse, do, None, causal, scale,
                                  dq=grads[0], dk=grads[1], dv=grads[2])
        return
    for acc, part in zip(grads, xp.attention_backward(q, *(_like(a, xp) for a in kv), o, lse, do, None, causal,
                                                      scale)):
        acc += _host(part)


def _ring_backward(xp, q, k, v, o, lse, g, is_causal, scale, comm):
    """(dq, dk, dv) of this rank's blocks: each K/V block travels round the ring with the sums
    of its gradients, and is back home with them after N hops."""
    r, n = comm.Get_rank(), comm.Get_size()
    ring, kernel = _Ring(comm), _merging_kernel(xp)
    do = xp.ascontiguousarray(g)
    dq, dk, dv = (np.zeros(a.shape, np.dtype(a.dtype)) for a in (q, k, v))
    kv = (k, v)                                 # the block held now; dk, dv: the sums of its gradients
    for s in range(n):
        j = (r - s) % n
        if not (is_causal and j > r):
            _add_grads(kernel, xp, q, kv, o, lse, do, (dq, dk, dv), bool(is_causal and j == r), scale)
        # pass the block with its sums on, after its kernel and in place: one block set in
        # memory at any time; after N hops the sums are back on the block's own rank
        if s == 0 and n > 1:                    # this rank's own k, v stay: the next block gets buffers
            kv = tuple(np.empty(a.shape, np.dtype(a.dtype)) for a in kv)
            ring.start((k, v), kv)
            ring.finish()
        elif s < n - 1:
            ring.replace(kv)
        ring.replace((dk, dv))
    del kv
    return _like(dq, xp), _like(dk, xp), _like(dv, xp)


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
