"""Fused nn ops (softmax, log_softmax, cross-entropy, layer norm) and embedding lookup.

Each calls the backend's fused kernels on a contiguous (rows, features) view, so the
Numba CPU kernels and the CUDA kernels serve every leading shape.
"""
from __future__ import annotations

from .._dims import normalize_dim
from ..autograd.function import Function


def _rows(xp, a, dim):
    """(a as a contiguous (N, C) array with ``dim`` last, a function that undoes it)."""
    nd = a.ndim
    dim = normalize_dim(dim, nd, "rows")
    moved = dim != nd - 1
    if moved:
        a = xp.moveaxis(a, dim, -1)
    shape = a.shape
    a2 = xp.ascontiguousarray(a.reshape(-1, shape[-1]) if nd else a.reshape(1, 1))

    def back(r):
        r = r.reshape(shape)
        return xp.moveaxis(r, -1, dim) if moved else r

    return a2, back


class _RowKernel(Function):
    """A fused row op along ``dim``: forward saves its output y, backward needs only y and g."""

    fwd = bwd = ""

    @classmethod
    def forward(cls, ctx, a, dim):
        a2, back = _rows(ctx.xp, a, dim)
        y = getattr(ctx.xp, cls.fwd)(a2)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return back(y)

    @classmethod
    def backward(cls, ctx, g):
        (y,) = ctx.saved_arrays
        g2, back = _rows(ctx.xp, g, ctx.dim)
        return back(getattr(ctx.xp, cls.bwd)(y, g2)), None


class Softmax(_RowKernel):
    """exp(a - max) / sum(exp(a - max)) along ``dim``; da = y ⊙ (g − Σ g⊙y)"""

    fwd, bwd = "softmax_forward", "softmax_backward"


class LogSoftmax(_RowKernel):
    """a - max - log Σ exp(a - max) along ``dim``; da = g − exp(y)·Σ g"""

    fwd, bwd = "log_softmax_forward", "log_softmax_backward"


class CrossEntropy(Function):
    """per-row −log softmax(logits)[target] (with label smoothing), fused; rows (N, C), target (N,)"""

    @staticmethod
    def forward(ctx, logits, target, ignore_index, label_smoothing, reduction):
        xp = ctx.xp
        logits = xp.ascontiguousarray(logits)
        loss, lse = xp.cross_entropy_forward(logits, target, ignore_index, label_smoothing)
        ctx.save_for_backward(logits, target, lse)
        ctx.args = (ignore_index, label_smoothing, reduction)
        if reduction == "none":
            return loss
        total = xp.sum(loss, keepdims=False)
        if reduction == "sum":
            return total
        count = xp.sum(target != ignore_index)
        ctx.count = count
        return total / count.astype(loss.dtype)

    @staticmethod
    def backward(ctx, g):
        logits, target, lse = ctx.saved_arrays
        ignore_index, ls, reduction = ctx.args
        xp = ctx.xp
        if reduction == "none":
            rows = xp.ascontiguousarray(g)
        else:
            scale = g if reduction == "sum" else g / ctx.count.astype(g.dtype)
            rows = xp.full(target.shape, 0, logits.dtype) + scale
        return xp.cross_entropy_backward(logits, target, lse, rows, ignore_index, ls), None, None, None, None


class LayerNorm(Function):
    """(a − mean) / sqrt(var + eps) · weight + bias over the last D elements, fused"""

    @staticmethod
    def forward(ctx, a, weight, bias, n_norm, eps):
        xp = ctx.xp
        shape = a.shape
        d = 1
        for s in shape[len(shape) - n_norm:]:
            d *= s
        a2 = xp.ascontiguousarray(a.reshape(-1, d))
        w = None if weight is None else weight.reshape(d)
        b = None if bias is None else bias.reshape(d)
        y, mean, rstd = xp.layer_norm_forward(a2, w, b, eps)
        ctx.save_for_backward(a2, w, mean, rstd)
        ctx.shape = shape
        ctx.wshape = weight.shape if weight is not None else (None if bias is None else bias.shape)
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        a2, w, mean, rstd = ctx.saved_arrays
        xp = ctx.xp
        dx, dw, db = xp.layer_norm_backward(xp.ascontiguousarray(g.reshape(a2.shape)), a2, w, mean, rstd)
        nw, nb = ctx.needs_input_grad[1:3]
        dw = dw.reshape(ctx.wshape) if (nw and dw is not None) else None
        db = db.reshape(ctx.wshape) if (nb and db is not None) else None
        return dx.reshape(ctx.shape), dw, db, None, None


class Embedding(Function):
    """weight[idx]; backward scatter-adds rows (``padding_idx`` rows get no gradient)"""

    @staticmethod
    def forward(ctx, weight, idx, padding_idx):
        ctx.save_for_backward(idx)
        ctx.wshape, ctx.padding_idx = weight.shape, padding_idx
        return weight[idx]

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_arrays
        xp = ctx.xp
        out = xp.zeros(ctx.wshape, g.dtype)
        flat = idx.reshape(-1)
        xp.add_at(out, flat, g.reshape(flat.shape[0], ctx.wshape[1]))  # not -1: breaks for 0 indices
        if ctx.padding_idx is not None:
            out[ctx.padding_idx] = 0
        return out, None, None
