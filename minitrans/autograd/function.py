"""``Function``: one differentiable op with static ``forward``/``backward`` on raw arrays.

An instance of the subclass is both the ``ctx`` handed to ``forward``/``backward`` and the
graph node recorded on the output tensor (as in PyTorch). ``apply`` unwraps tensors,
checks devices, runs ``forward`` and records the node when a gradient is needed.
"""
from __future__ import annotations

from .._tensor_core import TensorBase
from ..device import CPU
from .anomaly import check_forward, creation_trace
from .grad_mode import STATE


class Function:
    """Subclass with ``forward(ctx, *arrays, **kw) -> array`` and ``backward(ctx, grad) -> grads``.

    ``backward`` returns one gradient per positional input of ``forward`` (``None`` for
    inputs that are not tensors or need none); the engine sums broadcast gradients back to
    each input's shape, so an op may return a gradient of the broadcast shape.
    """

    __slots__ = ("xp", "saved", "needs_input_grad", "parents", "shapes", "dtypes", "_versions",
                 "_hooks", "_retain", "_freed", "_trace", "__dict__")

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    def save_for_backward(self, *arrays) -> None:
        self.saved = arrays

    @property
    def saved_arrays(self) -> tuple:
        if self._freed:
            raise RuntimeError(
                f"Trying to backward through {type(self).__name__} a second time, but its saved arrays were "
                "already freed. Specify retain_graph=True on the first backward() call.")
        return self.saved

    saved_tensors = saved_arrays

    @property
    def name(self) -> str:
        return type(self).__name__

    @classmethod
    def apply(cls, *args, **kwargs) -> TensorBase:
        ctx = cls.__new__(cls)
        raw = []
        needs = []
        req = False
        dev = None
        for a in args:
            if isinstance(a, TensorBase):
                d = a._device
                if dev is None:
                    dev = d
                elif d is not dev and d != dev:
                    raise RuntimeError(
                        f"{cls.__name__}: expected all tensors to be on the same device, "
                        f"but found at least two devices, {dev} and {d}")
                raw.append(a._data)
                r = a.requires_grad
                needs.append(r)
                req = req or r
            else:
                raw.append(a)
                needs.append(False)
        if dev is None:
            dev = CPU
        ctx.xp = dev._backend or dev.backend
        ctx.saved = ()
        ctx._freed = False
        req = req and STATE.enabled
        ctx.needs_input_grad = tuple(needs)
        out = cls.forward(ctx, *raw, **kwargs)
        if not isinstance(out, ctx.xp.ndarray):
            out = ctx.xp.asarray(out)
        t = TensorBase._wrap(out, dev, req)
        if req:
            ctx.parents = tuple(
                (a._node or a) if isinstance(a, TensorBase) and a.requires_grad else None for a in args)
            ctx.shapes = tuple(x.shape if n else None for x, n in zip(raw, needs))
            ctx.dtypes = tuple(x.dtype if n else None for x, n in zip(raw, needs))
            ctx._hooks = None
            ctx._retain = None
            saved = ctx.saved
            ctx._versions = None
            if saved:
                vs = [(a._version_counter, a._version_counter[0]) for a in args
                      if isinstance(a, TensorBase) and _shares(ctx.xp, a._data, saved)]
                if any(s is out for s in saved):
                    vs.append((t._version_counter, 0))
                if vs:
                    ctx._versions = vs
            if STATE.anomaly:
                ctx._trace = creation_trace()
            t._node = ctx
        if STATE.anomaly:
            check_forward(cls.__name__, out, ctx.xp)
        return t

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


def _shares(xp, data, saved) -> bool:
    """True when a saved array is ``data`` or shares its storage (a fused op may save a reshaped
    input, e.g. Linear's (N, in) view of x or LayerNorm's flat weight), so that an in-place change
    of the input is still caught. A saved copy shares nothing and needs no check."""
    for s in saved:
        if s is data or (isinstance(s, xp.ndarray) and xp.shares_storage(s, data)):
            return True
    return False
