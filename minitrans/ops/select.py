"""Ops that write into or pick from a tensor: item assignment, clone, tril/triu, topk, sort."""
from __future__ import annotations

import numpy as np

from ..autograd.function import Function


def cpu_only(ctx, name: str):
    """NumPy for an op the CUDA backend has no kernel for: a clear error on any other device."""
    if getattr(ctx.xp, "name", "cpu") != "cpu":
        raise NotImplementedError(f"{name} is not implemented on device '{ctx.xp.name}' (no kernel); "
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
            raise IndexError(f"index {_describe(idx)} is invalid for a tensor of shape {tuple(a.shape)}: {e}") from None
        except ValueError:
            raise RuntimeError(f"setitem: a value of shape {tuple(getattr(v, 'shape', ()))} cannot be assigned to "
                             f"index {_describe(idx)} of a tensor of shape {tuple(a.shape)}") from None
        return a

    @staticmethod
    def backward(ctx, g):
        na, nv = ctx.needs_input_grad[:2]
        ga = None
        if na:
            ga = g.copy()
            ga[ctx.idx] = 0
        return ga, (g[ctx.idx] if nv else None), None


def _describe(idx) -> str:
    from .shape import _describe as d

    return d(idx)


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
        n, m = a.shape[-2], a.shape[-1]
        keep = np.triu(np.ones((n, m), bool), diagonal) if upper else np.tril(np.ones((n, m), bool), diagonal)
        keep = ctx.xp.from_numpy(keep) if getattr(ctx.xp, "name", "cpu") != "cpu" else keep
        ctx.keep = keep
        return ctx.xp.where(keep, a, a.dtype.type(0))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.keep, g, g.dtype.type(0)), None, None


class Gather(Function):
    """a taken along ``dim`` at int64 ``index`` (same ndim as a), as ``torch.gather``;
    backward scatter-adds"""

    @staticmethod
    def forward(ctx, a, index, dim):
        xp = cpu_only(ctx, "gather")
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
        xp = cpu_only(ctx, "cumsum")
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
