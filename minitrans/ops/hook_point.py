"""``HookPoint``: an identity op whose backward hands the incoming gradients to a callback.

``nn`` module backward hooks use it (``minitrans/nn/hooks.py``) to see every gradient of one
call at once: the tensors pass through one ``HookPoint`` (several tensors are packed into one
flat array, then unpacked as views by the caller), and its backward calls
``on_backward(grads)`` with one gradient ``Tensor`` per tensor and passes on what the callback
returns (a list of the same length; ``None`` for no gradient).
"""
from __future__ import annotations

import math

from ..autograd.function import Function
from ..tensor import Tensor


class HookPoint(Function):
    """Identity over one or several tensors (several are packed into one flat array); its
    backward returns ``on_backward([gradient Tensor per input])``, cast to the inputs' dtypes."""

    @staticmethod
    def forward(ctx, *arrays, on_backward, device):
        ctx.on_backward, ctx.device = on_backward, device
        ctx.layout = [(a.shape, a.dtype) for a in arrays]
        if len(arrays) == 1:
            return arrays[0].reshape(arrays[0].shape)
        return ctx.xp.concatenate([a.reshape(-1) for a in arrays])

    @staticmethod
    def backward(ctx, g):
        if len(ctx.layout) == 1:
            parts = [g]
        else:
            parts, off = [], 0
            for shape, _ in ctx.layout:
                n = math.prod(shape)
                parts.append(g[off:off + n].reshape(shape))
                off += n
        new = ctx.on_backward([Tensor._wrap(p, ctx.device) for p in parts])
        return tuple(None if t is None else t._data.astype(dt, copy=False) for t, (_, dt) in zip(new, ctx.layout))
