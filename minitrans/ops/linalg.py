"""Matrix products: matmul for 1-D, 2-D and batched (broadcast) operands."""
from __future__ import annotations

from ..autograd.function import Function


def check_matmul(a_shape, b_shape) -> None:
    """Raise ValueError naming both shapes unless ``a @ b`` is defined."""
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {tuple(a_shape)} "
                         f"and {tuple(b_shape)}")
    k_a = a_shape[-1]
    k_b = b_shape[0] if len(b_shape) == 1 else b_shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {tuple(a_shape)} and {tuple(b_shape)} are not aligned: "
                         f"{k_a} (dim -1 of the first) != {k_b} (dim {0 if len(b_shape) == 1 else -2} of the second)")
    ba, bb = a_shape[:-2], b_shape[:-2]
    for x, y in zip(reversed(ba), reversed(bb)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"matmul: batch dims of shapes {tuple(a_shape)} and {tuple(b_shape)} "
                             "cannot be broadcast together")


class Matmul(Function):
    """a @ b; da = g·bᵀ, db = aᵀ·g (1-D operands are promoted to matrices, then squeezed back)"""

    @staticmethod
    def forward(ctx, a, b):
        check_matmul(a.shape, b.shape)
        ctx.save_for_backward(a, b)
        return ctx.xp.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_arrays
        xp = ctx.xp
        a2 = a if a.ndim > 1 else a.reshape(1, -1)
        b2 = b if b.ndim > 1 else b.reshape(-1, 1)
        if a.ndim == 1 or b.ndim == 1:  # put back the dims that the 1-D promotion removed
            g = g.reshape(g.shape[:-1] + (1, g.shape[-1])) if a.ndim == 1 and b.ndim > 1 else g
            g = g.reshape(g.shape + (1,)) if b.ndim == 1 and a.ndim > 1 else g
            g = g.reshape(1, 1) if a.ndim == 1 and b.ndim == 1 else g
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            ga = xp.sum_to(xp.matmul(g, xp.moveaxis(b2, -1, -2)), a2.shape).reshape(a.shape)
        if nb:
            gb = xp.sum_to(xp.matmul(xp.moveaxis(a2, -1, -2), g), b2.shape).reshape(b.shape)
        return ga, gb


class Linear(Function):
    """x·Wᵀ + b over the last dim, with leading dims flattened: one GEMM forward, two backward"""

    @staticmethod
    def forward(ctx, x, w, b):
        xp = ctx.xp   # shapes are checked once, by F.linear
        x2 = x.reshape(-1, x.shape[-1])
        y = xp.matmul(x2, xp.transpose(w)) if b is None else xp.addmm(b, x2, xp.transpose(w))
        ctx.save_for_backward(x2, w)
        ctx.xshape = x.shape
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x2, w = ctx.saved_arrays
        gx, gw, gb = ctx.xp.linear_backward(g.reshape(-1, g.shape[-1]), x2, w, ctx.needs_input_grad)
        return None if gx is None else gx.reshape(ctx.xshape), gw, gb


class LinearRelu(Function):
    """max(x·Wᵀ + b, 0): a Linear layer and ReLU as one op (``b`` may be None). The same values as
    the two ops one after the other; the output alone serves backward (ReLU's mask is ``y > 0``),
    and backward masks the gradient and sums it for the bias in one pass before the two products."""

    @staticmethod
    def forward(ctx, x, w, b):
        xp = ctx.xp   # shapes, dtypes and devices are checked by the caller
        x2 = x.reshape(-1, x.shape[-1])
        y = xp.addmm_relu(b, x2, xp.transpose(w))
        ctx.save_for_backward(x2, w, y)
        ctx.xshape = x.shape
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x2, w, y = ctx.saved_arrays
        gx, gw, gb = ctx.xp.linear_backward(g.reshape(y.shape), x2, w, ctx.needs_input_grad, relu_out=y)
        return None if gx is None else gx.reshape(ctx.xshape), gw, gb
