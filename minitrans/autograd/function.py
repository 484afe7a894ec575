"""``Function``: one differentiable op with static ``forward``/``backward`` on raw arrays.

An instance of the subclass is both the ``ctx`` handed to ``forward``/``backward`` and the
graph node recorded on the output tensor (as in PyTorch). ``apply`` unwraps tensors,
checks devices, runs ``forward`` and records the node when a gradient is needed.
"""
from __future__ import annotations

from .. import _tensor_core
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
                 "_freed", "_trace", "__dict__")
    # hooks on the node's output and a retain_grad() reference: rare, so they default here and are
    # stored in the instance only when set (the engine clears the instance's attributes once the
    # node has run, as it frees the saved arrays)
    _hooks = None
    _retain = None

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
        ctx = _new_object(cls)
        raw = []
        needs = []
        req = False
        dev = None
        for a in args:
            if isinstance(a, TensorBase):
                d = a._device
                if d is not dev:
                    if dev is None:
                        dev = d
                    elif d != dev:
                        raise RuntimeError(
                            f"{cls.__name__}: expected all tensors to be on the same device, "
                            f"but found at least two devices, {dev} and {d}")
                raw.append(a._data)
                if a.requires_grad:
                    needs.append(True)
                    req = True
                else:
                    needs.append(False)
            else:
                raw.append(a)
                needs.append(False)
        if dev is None:
            dev = CPU
        xp = ctx.xp = dev._backend or dev.backend
        ctx.saved = ()
        ctx._freed = False
        ctx.needs_input_grad = needs = tuple(needs)
        out = cls.forward(ctx, *raw, **kwargs) if kwargs else cls.forward(ctx, *raw)
        if not isinstance(out, xp.ndarray):
            out = xp.asarray(out)
        # the output tensor, built here rather than by TensorBase._wrap: one call less per op
        tensor_class = _tensor_core._TENSOR_CLASS
        t = tensor_class.__new__(tensor_class)
        t._data = out
        t._device = dev
        t.grad = None
        t._version_counter = [0]
        t._hooks = None
        if req and STATE.enabled:
            t.requires_grad = True
            ctx.parents, ctx.shapes, ctx.dtypes = _edges(args, raw, needs)
            saved = ctx.saved
            ctx._versions = _saved_versions(args, saved, xp, out, t) if saved else None
            if STATE.anomaly:
                ctx._trace = creation_trace()
            t._node = ctx
        else:
            t.requires_grad = False
            t._node = None
        if STATE.anomaly:
            check_forward(cls.__name__, out, xp)
        return t

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


_new_object = object.__new__


def _edges(args, raw, needs) -> tuple:
    """The node's parents (the input's node, or the leaf itself), shapes and dtypes, ``None`` for
    the inputs that need no gradient. One and two inputs, the common cases, are spelled out."""
    if len(args) == 2:
        a, b = args
        na, nb = needs
        if na:
            x = raw[0]
            if nb:
                y = raw[1]
                return (a._node or a, b._node or b), (x.shape, y.shape), (x.dtype, y.dtype)
            return (a._node or a, None), (x.shape, None), (x.dtype, None)
        y = raw[1]
        return (None, b._node or b), (None, y.shape), (None, y.dtype)
    if len(args) == 1:
        a = args[0]
        x = raw[0]
        return (a._node or a,), (x.shape,), (x.dtype,)
    parents, shapes, dtypes = [], [], []      # one loop: ~3x faster than three generator expressions
    for a, x, n in zip(args, raw, needs):
        if n:
            parents.append(a._node or a)
            shapes.append(x.shape)
            dtypes.append(x.dtype)
        else:
            parents.append(None)
            shapes.append(None)
            dtypes.append(None)
    return tuple(parents), tuple(shapes), tuple(dtypes)


def _saved_versions(args, saved, xp, out, t):
    """``(version counter, version now)`` of every input whose storage a saved array shares, and of
    the output when it is saved itself; the engine compares them before running ``backward``, which
    catches an in-place change of a saved input. ``None`` when nothing saved is an input or the output."""
    versions = None
    for a in args:
        if isinstance(a, TensorBase) and _shares(xp, a._data, saved):
            vc = a._version_counter
            if versions is None:
                versions = [(vc, vc[0])]
            else:
                versions.append((vc, vc[0]))
    for s in saved:
        if s is out:
            if versions is None:
                versions = [(t._version_counter, 0)]
            else:
                versions.append((t._version_counter, 0))
            break
    return versions


def _shares(xp, data, saved) -> bool:
    """True when a saved array is ``data`` or shares its storage (a fused op may save a reshaped
    input, e.g. Linear's (N, in) view of x or LayerNorm's flat weight), so that an in-place change
    of the input is still caught. A saved copy shares nothing and needs no check."""
    for s in saved:
        if s is data or (isinstance(s, xp.ndarray) and xp.shares_storage(s, data)):
            return True
    return False
