"""Reductions along any axes with keepdim: sum (primitive), amax/amin (primitive), the rest composed."""
from __future__ import annotations

from numbers import Integral

from .._dims import normalize_dim
from ..autograd.function import Function


def normalize_axes(axis, ndim: int, name: str):
    """Validate ``axis`` (None, int or sequence) against ``ndim``; return a sorted tuple or None."""
    if axis is None:
        return None
    if isinstance(axis, Integral):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise TypeError(f"{name}: dim must be an int or a tuple of ints, got {axis!r}")
    out = [normalize_dim(a, ndim, name) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: dim {axis!r} repeats an axis")
    return tuple(sorted(out))


def _expand_back(g, shape, axes, keepdim):
    """Give ``g`` (the reduced gradient) back the reduced axes as size-1 dims."""
    if keepdim or axes is None and g.ndim == len(shape):
        return g
    if axes is None:
        return g.reshape((1,) * len(shape))
    s = list(g.shape)
    for a in axes:
        s.insert(a, 1)
    return g.reshape(s)


class Sum(Function):
    """sum of a over axes"""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        return ctx.xp.sum(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        g = _expand_back(g, ctx.shape, ctx.axes, ctx.keepdim)
        return ctx.xp.broadcast_to(g, ctx.shape), None, None


class _Extreme(Function):
    """max/min of a over axes; ties share the gradient equally"""

    op = "max"

    @classmethod
    def forward(cls, ctx, a, axes, keepdim):
        if a.size == 0:
            raise RuntimeError(f"{cls.op}(): cannot reduce an empty tensor of shape {a.shape}")
        out = getattr(ctx.xp, cls.op)(a, axis=axes, keepdims=True)
        ctx.save_for_backward(a, out)
        ctx.axes, ctx.keepdim = axes, keepdim
        return out if keepdim else out.reshape(_squeezed(a.shape, axes))

    @staticmethod
    def backward(ctx, g):
        a, out = ctx.saved_arrays
        g = _expand_back(g, a.shape, ctx.axes, ctx.keepdim) if not ctx.keepdim else g
        hit = a == out
        count = ctx.xp.sum(hit, axis=ctx.axes, keepdims=True)
        return g * hit / count, None, None


def _squeezed(shape, axes):
    if axes is None:
        return ()
    return tuple(s for i, s in enumerate(shape) if i not in axes)


class Amax(_Extreme):
    """max over axes"""

    op = "max"


class Amin(_Extreme):
    """min over axes"""

    op = "min"
