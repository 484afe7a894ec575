"""``Tensor``: an array, its device and dtype, its gradient, and the graph node that made it.

The class is assembled from layers, each in its own module, so that every method is defined
on the class (``help(mt.Tensor)`` and type checkers see them all):

- ``_tensor_core.TensorBase``: the state and what needs no op (shape, dtype, item, detach, hooks);
- ``_tensor_arith``: operators, promotion, dtype conversion;   ``_tensor_math``: unary math, division;
- ``_tensor_reduce``: reductions and sorting;   ``_tensor_shape``: views, indexing, selection;
- ``_tensor_inplace``: in-place methods and item assignment;
- here: construction, backward, device moves, and new tensors like this one.

The creation functions (``tensor``, ``zeros`` ...) live in ``_creation`` and are re-exported here.
"""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._creation import (arange, empty, empty_like, from_numpy, full, full_like, linspace, ones, ones_like,
                        shape_from_args, tensor, zeros, zeros_like)
from ._tensor_arith import ArithmeticMixin, astype
from ._tensor_core import HookHandle, TensorBase
from ._tensor_inplace import InPlaceMixin
from ._tensor_math import MathMixin
from ._tensor_reduce import ReductionMixin
from ._tensor_shape import ShapeMixin
from .autograd import engine
from .autograd.api import backward as backward_many
from .device import as_device
from .ops.shape import ToDevice
from .random import generator

__all__ = ["Tensor", "tensor", "from_numpy", "zeros", "ones", "empty", "full", "arange", "linspace",
           "zeros_like", "ones_like", "full_like", "empty_like"]


class Tensor(ArithmeticMixin, MathMixin, ReductionMixin, ShapeMixin, InPlaceMixin, TensorBase):
    """An n-dimensional array that records the ops applied to it for reverse-mode autograd."""

    __slots__ = ()

    def __init__(self, data, dtype=None, device=None, requires_grad: bool = False) -> None:
        t = tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        self._data, self._device = t._data, t._device
        self.requires_grad, self.grad, self._node = t.requires_grad, None, None
        self._version_counter, self._hooks = [0], None

    # ----------------------------------------------------------------- autograd
    def backward(self, gradient: "Tensor | None" = None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs=None) -> None:
        """PyTorch's signature; ``create_graph`` and ``inputs`` raise a clear NotImplementedError."""
        if create_graph or inputs is not None:
            backward_many(self, gradient, retain_graph, create_graph, inputs)
            return
        engine.backward(self, gradient, bool(retain_graph))

    def register_post_accumulate_grad_hook(self, hook) -> HookHandle:
        """``hook(tensor) -> None`` runs on a leaf right after backward has updated its ``.grad``."""
        if not self.requires_grad or self._node is not None:
            raise RuntimeError("post accumulate grad hooks can only be registered on leaf tensors that "
                               "require grad")
        return HookHandle(engine.register_post_accumulate_grad_hook(self, hook), hook)

    # ----------------------------------------------------------------- devices
    def to(self, *args, **kwargs) -> "Tensor":
        """``to(device)``, ``to(dtype)`` or ``to(device, dtype)``; returns self when nothing changes."""
        dev, dt = kwargs.pop("device", None), kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, (_dtype.dtype, type)) or (isinstance(a, str) and a in _dtype._NAMES):
                dt = a
            else:
                dev = a
        out = self
        if dt is not None:
            out = astype(out, dt)
        if dev is not None:
            dev = as_device(dev)
            if dev != out._device:
                out = ToDevice.apply(out, dev)
        return out

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    # ----------------------------------------------------------------- new tensors like this one
    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad: bool = False) -> "Tensor":
        return full(size, fill_value, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad: bool = False) -> "Tensor":
        return self.new_full(shape_from_args(size), 0, dtype, device, requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad: bool = False) -> "Tensor":
        return self.new_full(shape_from_args(size), 1, dtype, device, requires_grad)

    new_empty = new_zeros

    def new_tensor(self, data, dtype=None, device=None, requires_grad: bool = False) -> "Tensor":
        return tensor(data, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)

    def multinomial(self, num_samples: int, replacement: bool = False, *, generator=None) -> "Tensor":
        """Indices drawn from the categorical distribution(s) in the rows of this tensor (non-negative
        weights, need not sum to 1), from the global generator (``manual_seed`` fixes them)."""
        if generator is not None:
            raise NotImplementedError("multinomial: a separate generator is not supported; use mt.manual_seed")
        return _multinomial(self, num_samples, replacement)


def _multinomial(weights: Tensor, num_samples: int, replacement: bool) -> Tensor:
    if weights.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got shape {tuple(weights.shape)}")
    if not weights.dtype.is_floating_point:
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got {weights.dtype}")
    if not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise RuntimeError(f"multinomial: cannot sample {num_samples} samples (must be a positive int)")
    w = weights.numpy().astype(np.float64).reshape(-1, weights.shape[-1])
    n = w.shape[1]
    if not np.isfinite(w).all() or (w < 0).any():
        raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or element < 0")
    if (w.sum(axis=1) <= 0).any():
        raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
    if not replacement and num_samples > n:
        raise RuntimeError(f"multinomial: cannot sample n_sample ({num_samples}) > prob_dist.size(-1) ({n}) "
                           "samples without replacement")
    if not replacement and (np.count_nonzero(w, axis=1) < num_samples).any():
        raise RuntimeError("multinomial: invalid multinomial distribution (with replacement=False, not enough "
                           "non-negative category to sample)")
    rng = generator()
    if replacement:
        cdf = np.cumsum(w, axis=1)
        u = rng.random((w.shape[0], int(num_samples))) * cdf[:, -1:]
        out = np.stack([np.searchsorted(c, r, side="right") for c, r in zip(cdf, u)])
        out = np.minimum(out, n - 1)
    else:
        # sequential draws without replacement = the smallest Exp(1)/w keys (zero weight: never)
        with np.errstate(divide="ignore"):
            keys = rng.standard_exponential(w.shape) / w
        out = np.argsort(keys, axis=1, kind="stable")[:, : int(num_samples)]
    out = out.astype(np.int64).reshape(*weights.shape[:-1], int(num_samples))
    return Tensor._wrap(weights.device.backend.from_numpy(out), weights.device)
