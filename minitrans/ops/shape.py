"""Shape ops: reshape, permute, expand, indexing, cat, masked_fill and device moves."""
from __future__ import annotations

from .._tensor_core import TensorBase
from ..autograd.function import Function
from ..autograd.grad_mode import STATE


class _View(Function):
    """An op whose output may be a view of its input's storage: when it is, the two share one
    version counter (as in PyTorch), so an in-place change through either is seen by every
    node that saved the other, and the output is marked as a view (``_is_view``)."""

    @classmethod
    def apply(cls, a, *args, **kwargs):
        t = super().apply(a, *args, **kwargs)
        if a._device.backend.shares_storage(t._data, a._data):
            t._version_counter = a._version_counter
            t._is_view = True
        return t


class Reshape(_View):
    """a viewed with another shape (same number of elements)"""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view a tensor of shape {tuple(a.shape)} "
                             f"({a.size} elements) as shape {tuple(shape)}") from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class Permute(_View):
    """a with its axes reordered"""

    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        inv = [0] * len(ctx.axes)
        for i, a in enumerate(ctx.axes):
            inv[a] = i
        return g.transpose(inv), None


class Expand(_View):
    """a broadcast to a larger shape (a view; the engine sums the gradient back)"""

    @staticmethod
    def forward(ctx, a, shape):
        try:
            return ctx.xp.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(f"expand: a tensor of shape {tuple(a.shape)} cannot be expanded to {tuple(shape)}") from None

    @staticmethod
    def backward(ctx, g):
        return g, None


class GetItem(_View):
    """a[idx]; backward places g at idx in zeros (``index_grad``), so repeated integer indices accumulate"""

    @staticmethod
    def forward(ctx, a, idx):
        ctx.shape, ctx.idx, ctx.dtype = a.shape, idx, a.dtype
        try:
            return a[idx]
        except IndexError as e:
            raise IndexError(f"index {describe_index(idx)} is invalid for a tensor of shape {tuple(a.shape)}: {e}") from None

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.index_grad(ctx.shape, ctx.dtype, ctx.idx, g), None


def describe_index(idx) -> str:
    items = idx if isinstance(idx, tuple) else (idx,)
    parts = []
    for i in items:
        shape = getattr(i, "shape", None)
        parts.append(f"array{tuple(shape)}" if shape is not None else repr(i))
    return "[" + ", ".join(parts) + "]"


class Contiguous(Function):
    """a copied into C order (the gradient passes through)"""

    @staticmethod
    def forward(ctx, a):
        return ctx.xp.ascontiguousarray(a)

    @staticmethod
    def backward(ctx, g):
        return g


class Cat(Function):
    """concatenation of the inputs along ``dim``"""

    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.sizes = [x.shape[dim] for x in arrays]
        ctx.dim = dim
        try:
            return ctx.xp.concatenate(arrays, axis=dim)
        except ValueError:
            raise ValueError(f"cat: tensors of shapes {[tuple(x.shape) for x in arrays]} differ outside "
                             f"dim {dim}") from None

    @staticmethod
    def backward(ctx, g):
        out, start = [], 0
        sl = [slice(None)] * g.ndim
        for s, need in zip(ctx.sizes, ctx.needs_input_grad):
            sl[ctx.dim] = slice(start, start + s)
            out.append(g[tuple(sl)] if need else None)
            start += s
        return tuple(out)


class MaskedFill(Function):
    """a with ``value`` wherever the bool mask is True"""

    @staticmethod
    def forward(ctx, a, mask, value):
        ctx.save_for_backward(mask)
        try:
            return ctx.xp.where(mask, a.dtype.type(value), a)
        except ValueError:
            raise ValueError(f"masked_fill: mask of shape {tuple(mask.shape)} does not broadcast to "
                             f"the input's shape {tuple(a.shape)}") from None

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_arrays
        return g * ~mask, None, None


class ToDevice(Function):
    """a copied to another device (the gradient is copied back)"""

    @staticmethod
    def forward(ctx, a, dev):
        return dev.backend.from_numpy(ctx.xp.to_numpy(a))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.from_numpy(ctx.dst.to_numpy(g)), None

    @classmethod
    def apply(cls, a, dev):
        # Function.apply, except that the output lives on ``dev`` while the node's backend
        # (which runs backward and receives the gradient) is the source device's.
        ctx = cls.__new__(cls)
        ctx.xp, ctx.dst, ctx.saved, ctx._freed = a._device.backend, dev.backend, (), False
        req = a.requires_grad and STATE.enabled
        ctx.needs_input_grad = (a.requires_grad, False)
        out = TensorBase._wrap(cls.forward(ctx, a._data, dev), dev, req)
        if req:
            ctx.parents, ctx.shapes, ctx.dtypes = (a._node or a, None), (a.shape, None), (a._data.dtype, None)
            ctx._hooks = ctx._retain = ctx._versions = None
            out._node = ctx
        return out
