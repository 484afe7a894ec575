"""Ops that write into or pick from a tensor: item assignment, clone, tril/triu, topk, sort."""
from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from .shape import describe_index


def requires_host_memory(backend, name: str):
    """NumPy, for an op computed with NumPy on the arrays themselves (no device kernel): a clear
    error on a backend whose arrays live in device memory."""
    if not backend.host_memory:
        raise NotImplementedError(f"{name} is not implemented on device '{backend.name}' (no kernel); "
                                  "move the tensor to the CPU with .cpu() first")
    return np


class SetItem(Function):
    """a[idx] = v, written into ``a``'s own storage. The output *is* ``a``'s array: the caller
    makes the node the tensor's new history. d/da = g with the written positions zeroed,
    d/dv = g[idx] (summed back to v's shape by the engine)."""

    @staticmethod
    def forward(ctx, a, v, idx):
        ctx.idx = idx
        try:
            a[idx] = v
        except IndexError as e:
            raise IndexError(f"index {describe_index(idx)} is invalid for a tensor of shape {tuple(a.shape)}: "
                             f"{e}") from None
        except ValueError:
            raise RuntimeError(f"setitem: a value of shape {tuple(getattr(v, 'shape', ()))} cannot be assigned to "
                             f"index {describe_index(idx)} of a tensor of shape {tuple(a.shape)}") from None
        return a

    @staticmethod
    def backward(ctx, g):
        na, nv = ctx.needs_input_grad[:2]
        ga = None
        if na:
            ga = g.copy()
            ga[ctx.idx] = 0
        return ga, (g[ctx.idx] if nv else None), None


class Clone(Function):
    """a copied into new storage (gradient passes through)"""

    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g


class TriMask(Function):
    """a with the elements outside the lower (``upper=False``) or upper triangle of its last two
    dims set to zero, ``diagonal`` as in ``torch.tril``/``torch.triu``; the gradient is masked alike"""

    @staticmethod
    def forward(ctx, a, diagonal, upper):
        xp = ctx.xp
        n, m = a.shape[-2], a.shape[-1]
        offset = xp.arange(m, dtype=np.int64).reshape((1, m)) - xp.arange(n, dtype=np.int64).reshape((n, 1))
        keep = ctx.keep = (offset >= diagonal) if upper else (offset <= diagonal)   # column - row vs diagonal
        return xp.where(keep, a, a.dtype.type(0))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.keep, g, g.dtype.type(0)), None, None


class Gather(Function):
    """a taken along ``dim`` at int64 ``index`` (same ndim as a), as ``torch.gather``;
    backward scatter-adds"""

    @staticmethod
    def forward(ctx, a, index, dim):
        xp = requires_host_memory(ctx.xp, "gather")
        ctx.shape, ctx.index, ctx.dim = a.shape, index, dim
        return xp.take_along_axis(a, index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.shape, g.dtype)
        idx = list(np.indices(ctx.index.shape, sparse=True))
        idx[ctx.dim] = ctx.index
        np.add.at(out, tuple(idx), g)
        return out, None, None


class CumSum(Function):
    """running sum along ``dim``; the gradient is the reversed running sum of g"""

    @staticmethod
    def forward(ctx, a, dim):
        xp = requires_host_memory(ctx.xp, "cumsum")
        ctx.dim = dim
        return xp.cumsum(a, axis=dim)

    @staticmethod
    def backward(ctx, g):
        rev = np.flip(g, ctx.dim)
        return np.flip(np.cumsum(rev, axis=ctx.dim), ctx.dim), None


class Pad(Function):
    """a surrounded by ``value``: ``pads`` is one (before, after) pair per dim; the gradient is
    the middle of g"""

    @staticmethod
    def forward(ctx, a, pads, value):
        ctx.inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, a.shape))
        out = ctx.xp.full(tuple(n + lo + hi for (lo, hi), n in zip(pads, a.shape)), value, a.dtype)
        out[ctx.inner] = a
        return out

    @staticmethod
    def backward(ctx, g):
        return g[ctx.inner], None, None


class LSTMPointwise(Function):
    """One LSTM step after the matrix products: gates (N, 4H) = [i f g o] pre-activations and
    the cell c (N, H) give [h' c'] (N, 2H) with c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c').
    Backward, with dh, dc the two halves of the incoming gradient:
      dc_total = dc + dh·σ(o)·(1 − tanh²c'),  dc_prev = dc_total·σ(f),
      d i = dc_total·tanh(g)·σ(i)(1−σ(i)),  d f = dc_total·c·σ(f)(1−σ(f)),
      d g = dc_total·σ(i)·(1 − tanh²g),      d o = dh·tanh(c')·σ(o)(1−σ(o))."""

    @staticmethod
    def forward(ctx, gates, c):
        xp = ctx.xp
        H = c.shape[-1]
        i, f, o = xp.sigmoid(gates[..., :H]), xp.sigmoid(gates[..., H:2 * H]), xp.sigmoid(gates[..., 3 * H:])
        g = xp.tanh(gates[..., 2 * H:3 * H])
        c2 = f * c + i * g
        tc = xp.tanh(c2)
        ctx.save_for_backward(c)
        ctx.parts = (i, f, g, o, tc)
        return xp.concatenate([o * tc, c2], axis=-1)

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        (c,) = ctx.saved_arrays
        i, f, g, o, tc = ctx.parts
        H = c.shape[-1]
        dh, dc = grad[..., :H], grad[..., H:]
        dct = dc + dh * o * (1 - tc * tc)
        dgates = xp.concatenate([dct * g * i * (1 - i), dct * c * f * (1 - f), dct * i * (1 - g * g),
                                 dh * tc * o * (1 - o)], axis=-1)
        return dgates, dct * f
