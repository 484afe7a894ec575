"""Elementwise ops. Each is one Function; the engine undoes broadcasting of their gradients."""
from __future__ import annotations

import math

from ..autograd.function import Function

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _shape(a):
    return tuple(getattr(a, "shape", ()))


def _bcast(name, a, b, f):
    try:
        return f(a, b)
    except ValueError:
        raise ValueError(f"{name}: shapes {_shape(a)} and {_shape(b)} cannot be broadcast together") from None
    except TypeError:  # e.g. NumPy refuses bool - bool
        raise TypeError(f"{name}: not supported for operands of dtype {_dtype_of(a)} and {_dtype_of(b)}") from None


def _dtype_of(a):
    d = getattr(a, "dtype", None)
    return type(a).__name__ if d is None else d


class Add(Function):
    """a + b"""

    @staticmethod
    def forward(ctx, a, b):
        return _bcast("add", a, b, lambda x, y: x + y)

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """a - b"""

    @staticmethod
    def forward(ctx, a, b):
        return _bcast("sub", a, b, lambda x, y: x - y)

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """a * b"""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _bcast("mul", a, b, lambda x, y: x * y)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_arrays
        na, nb = ctx.needs_input_grad
        return (g * b if na else None), (g * a if nb else None)


class Div(Function):
    """a / b"""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _bcast("div", a, b, lambda x, y: x / y)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_arrays
        na, nb = ctx.needs_input_grad
        gb = g / b
        return (gb if na else None), (-gb * a / b if nb else None)


class Neg(Function):
    """-a"""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    """a ** b for a tensor exponent b (d/db = a**b · log a)"""

    @staticmethod
    def forward(ctx, a, b):
        out = _bcast("pow", a, b, ctx.xp.power)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_arrays
        xp = ctx.xp
        na, nb = ctx.needs_input_grad
        ga = g * b * xp.power(a, b - 1) if na else None
        gb = None
        if nb:
            with xp.errstate(divide="ignore", invalid="ignore"):
                gb = g * out * xp.where(a > 0, xp.log(xp.where(a > 0, a, 1)), 0)
        return ga, gb


class PowScalar(Function):
    """a ** p for a Python number p"""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a)
        ctx.p = p
        return a ** p

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_arrays
        p = ctx.p
        return (g * p * a ** (p - 1) if p != 2 else g * 2 * a), None


class RPowScalar(Function):
    """c ** a for a Python number c > 0"""

    @staticmethod
    def forward(ctx, a, c):
        out = ctx.xp.power(a.dtype.type(c), a)
        ctx.save_for_backward(out)
        ctx.logc = math.log(c) if c > 0 else float("nan")
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_arrays
        return g * out * ctx.logc, None


class _FromOutput:
    """An elementwise f(a) whose derivative is a function of its output: forward computes
    ``compute(xp, a)`` and saves it, backward returns ``grad_from_output(g, out)``. A mixin, not a
    Function: only its subclasses are ops."""

    compute = grad_from_output = None

    @classmethod
    def forward(cls, ctx, a):
        out = cls.compute(ctx.xp, a)
        ctx.save_for_backward(out)
        return out

    @classmethod
    def backward(cls, ctx, g):
        (out,) = ctx.saved_arrays
        return cls.grad_from_output(g, out)


class Exp(_FromOutput, Function):
    """exp(a); d/da = exp(a)"""

    compute = staticmethod(lambda xp, a: xp.exp(a))
    grad_from_output = staticmethod(lambda g, out: g * out)


class Log(Function):
    """log(a)"""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        with ctx.xp.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf, log(-1) = nan, silently
            return ctx.xp.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_arrays
        return g / a


class Sqrt(_FromOutput, Function):
    """sqrt(a); d/da = 1 / (2·sqrt(a))"""

    compute = staticmethod(lambda xp, a: xp.sqrt(a))
    grad_from_output = staticmethod(lambda g, out: g / (2 * out))


class Abs(Function):
    """|a| (gradient sign(a), 0 at 0 as in PyTorch)"""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_arrays
        return g * ctx.xp.sign(a)


class Tanh(_FromOutput, Function):
    """tanh(a); d/da = 1 - tanh²(a)"""

    compute = staticmethod(lambda xp, a: xp.tanh(a))
    grad_from_output = staticmethod(lambda g, out: g * (1 - out * out))


class Sigmoid(_FromOutput, Function):
    """1 / (1 + exp(-a)); d/da = σ(a)·(1 - σ(a))"""

    compute = staticmethod(lambda xp, a: xp.sigmoid(a))
    grad_from_output = staticmethod(lambda g, out: g * out * (1 - out))


class Relu(_FromOutput, Function):
    """max(a, 0); the gradient passes where the output is positive (elsewhere it is 0, even where
    the incoming gradient is inf or nan, as in PyTorch)"""

    compute = staticmethod(lambda xp, a: xp.maximum(a, 0))

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_arrays
        return ctx.xp.where(out > 0, g, 0)


class Gelu(Function):
    """0.5·a·(1 + tanh(√(2/π)·(a + 0.044715·a³)))  (the tanh approximation)"""

    @staticmethod
    def forward(ctx, a):
        t = ctx.xp.tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a * a * a))
        ctx.save_for_backward(a, t)
        return 0.5 * a * (1 + t)

    @staticmethod
    def backward(ctx, g):
        a, t = ctx.saved_arrays
        dinner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * a * a)
        return g * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * dinner)


class _PairExtreme:
    """max(a, b) or min(a, b) elementwise (``kernel``: the backend's maximum or minimum); a tie
    sends half the gradient to each side, as PyTorch. A mixin, not a Function."""

    kernel = ""

    @classmethod
    def forward(cls, ctx, a, b):
        ctx.save_for_backward(a, b)
        return _bcast(cls.kernel, a, b, getattr(ctx.xp, cls.kernel))

    @classmethod
    def backward(cls, ctx, g):
        a, b = ctx.saved_arrays
        wins = (a > b) if cls.kernel == "maximum" else (a < b)
        w = wins + 0.5 * (a == b)
        return g * w, g * (1 - w)


class Maximum(_PairExtreme, Function):
    """max(a, b) elementwise"""

    kernel = "maximum"


class Minimum(_PairExtreme, Function):
    """min(a, b) elementwise"""

    kernel = "minimum"


class Where(Function):
    """cond ? a : b (cond is a bool array, not differentiable)"""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        try:
            return ctx.xp.where(cond, a, b)
        except ValueError:
            raise ValueError(f"where: condition {_shape(cond)}, input {_shape(a)} and other {_shape(b)} "
                             "cannot be broadcast together") from None

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_arrays
        na, nb = ctx.needs_input_grad[1:]
        return None, (g * cond if na else None), (g * ~cond if nb else None)


class Clamp(Function):
    """min(max(a, lo), hi); the gradient passes where lo <= a <= hi"""

    @staticmethod
    def forward(ctx, a, lo, hi):
        ctx.save_for_backward(a)
        ctx.lo, ctx.hi = lo, hi
        return ctx.xp.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_arrays
        keep = True
        if ctx.lo is not None:
            keep = a >= ctx.lo
        if ctx.hi is not None:
            keep = keep & (a <= ctx.hi)
        return g * keep, None, None


class Cast(Function):
    """a converted to another floating dtype (the gradient is cast back by the engine)"""

    @staticmethod
    def forward(ctx, a, npdtype):
        return a.astype(npdtype)

    @staticmethod
    def backward(ctx, g):
        return g, None
