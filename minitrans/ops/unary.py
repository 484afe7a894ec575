"""Elementwise math PyTorch programs reach for beyond the core set: sin, cos, the rounding
family, floor division and remainder. Forward and backward sit side by side in each Function."""
from __future__ import annotations

from ..autograd.function import Function
from .select import requires_host_memory


class _SinOrCos:
    """forward/backward of sin or cos of a (CPU only), the Function mixing it in naming which and how
    its derivative is computed (a mixin, not a Function: only Sin and Cos are ops)."""

    op: str
    derivative = None                                   # (xp, a) -> d/da

    @staticmethod
    def forward(ctx, a):
        xp = requires_host_memory(ctx.xp, ctx.op)
        ctx.save_for_backward(a)
        return getattr(xp, ctx.op)(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_arrays
        return g * ctx.derivative(requires_host_memory(ctx.xp, ctx.op), a)


class Sin(_SinOrCos, Function):
    """sin(a); d/da = cos(a)"""

    op, derivative = "sin", staticmethod(lambda xp, a: xp.cos(a))


class Cos(_SinOrCos, Function):
    """cos(a); d/da = -sin(a)"""

    op, derivative = "cos", staticmethod(lambda xp, a: -xp.sin(a))


class Step(Function):
    """A piecewise-constant function of a (floor, ceil, round, trunc, sign): the gradient is
    zero everywhere, as in PyTorch (which also defines it as zero at the jumps)"""

    @staticmethod
    def forward(ctx, a, name, decimals=0):
        if name == "sign":
            return ctx.xp.sign(a)
        xp = requires_host_memory(ctx.xp, name)
        if name == "round":
            return xp.round(a, decimals)
        return getattr(xp, name)(a)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.zeros_like(g), None, None


class FloorDivide(Function):
    """floor(a / b) (Python's //); zero gradient, as PyTorch's ``div(rounding_mode="floor")``"""

    @staticmethod
    def forward(ctx, a, b, mode):
        # a is an array of the result's dtype (the caller promotes); b an array or a number
        xp = requires_host_memory(ctx.xp, f"div(rounding_mode={mode!r})")
        if a.dtype.kind == "f":
            with xp.errstate(divide="ignore", invalid="ignore"):
                q = xp.true_divide(a, b)
            return (xp.floor(q) if mode == "floor" else xp.trunc(q)).astype(a.dtype, copy=False)
        if xp.any(xp.asarray(b) == 0):
            raise RuntimeError("ZeroDivisionError: integer division by zero")
        if mode == "floor":
            return xp.floor_divide(a, b)
        q = xp.floor_divide(xp.abs(a), xp.abs(b))           # truncation rounds toward zero
        return xp.where((a < 0) != (xp.asarray(b) < 0), -q, q)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.zeros_like(g), None, None


class Remainder(Function):
    """a - floor(a / b)·b, the sign following b (Python's %, ``torch.remainder``);
    d/da = 1, d/db = -floor(a / b)"""

    @staticmethod
    def forward(ctx, a, b):
        xp = requires_host_memory(ctx.xp, "remainder")
        if a.dtype.kind != "f" and xp.any(xp.asarray(b) == 0):
            raise RuntimeError("ZeroDivisionError: integer modulo by zero")
        ctx.save_for_backward(a, b)
        with xp.errstate(divide="ignore", invalid="ignore"):
            return xp.mod(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_arrays
        nb = ctx.needs_input_grad[1]
        return g, (-g * requires_host_memory(ctx.xp, "remainder").floor(a / b) if nb else None)
