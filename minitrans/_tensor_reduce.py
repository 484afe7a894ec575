"""Tensor reductions and orderings: sum, mean, var, max/min (with indices), argmax, any/all,
cumsum, norm, sort and topk."""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._dims import normalize_dim
from ._tensor_arith import astype
from ._tensor_core import TensorBase
from .ops import reduce as reduce_ops
from .ops.elementwise import Maximum, Minimum
from .ops.reduce import normalize_axes
from .ops.select import CumSum, Gather, requires_host_memory


class ValuesIndices(tuple):
    """(values, indices) with ``.values`` / ``.indices``, as returned by max(dim)/min(dim), topk and sort,
    like ``torch.return_types.max`` / ``topk`` / ``sort``."""

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


def _reduction(fn, name):
    def op(a: TensorBase, dim=None, keepdim: bool = False) -> TensorBase:
        return fn.apply(a, normalize_axes(dim, a.ndim, name), bool(keepdim))

    op.__name__ = name
    op.__doc__ = f"{fn.__doc__} (``dim``: an int, a tuple of ints or None for all)."
    return op


def _reduced_count(a: TensorBase, axes) -> int:
    return a.numel() if axes is None else int(np.prod([a.shape[i] for i in axes]))


def _index_of_extreme(name):
    """argmax / argmin: the int64 index of the first extreme value (over all elements when dim is None)."""
    def op(a: TensorBase, dim=None, keepdim: bool = False) -> TensorBase:
        backend = a._device.backend
        axis = None if dim is None else normalize_dim(dim, a.ndim, name)
        if a.numel() == 0 and (axis is None or a.shape[axis] == 0):  # a clean error instead of NumPy's
            raise RuntimeError(f"{name}(): cannot reduce an empty tensor of shape {tuple(a.shape)}"
                               + ("" if dim is None else f" along dim {dim}"))
        if axis is None:
            return TensorBase._wrap(backend.asarray(getattr(backend, name)(a._data)).astype(np.int64), a._device)
        index = getattr(backend, name)(a._data, axis=axis, keepdims=bool(keepdim))
        return TensorBase._wrap(index.astype(np.int64), a._device)

    op.__name__ = name
    return op


def _extreme(fn, elementwise, arg_name, name):
    """max / min: over everything, along one dim with indices, or elementwise against a tensor."""
    def op(a: TensorBase, dim=None, keepdim: bool = False):
        if isinstance(dim, TensorBase):  # max(a, b): elementwise
            return elementwise.apply(a, dim)
        if dim is None:
            return fn.apply(a, None, False)
        axis = normalize_dim(dim, a.ndim, name)
        values = fn.apply(a, (axis,), bool(keepdim))
        return ValuesIndices((values, getattr(a, arg_name)(axis, keepdim)))

    op.__name__ = name
    return op


def _logical_reduction(name):
    def op(a: TensorBase, dim=None, keepdim: bool = False) -> TensorBase:
        backend = a._device.backend
        axes = normalize_axes(dim, a.ndim, name)
        return TensorBase._wrap(backend.asarray(getattr(backend, name)(a._data, axis=axes, keepdims=keepdim)),
                                a._device)

    op.__name__ = name
    return op


def _sorted_indices(a: TensorBase, d: int, descending: bool, name: str) -> np.ndarray:
    """Host indices that sort ``a`` along ``d``, stably (equal values keep their order)."""
    requires_host_memory(a._device.backend, name)
    x = a._data
    # descending sorts the negated key (NaN sorts as largest)
    key = x if not descending else (-x if x.dtype.kind == "f" else -x.astype(np.int64) if x.dtype.kind != "b"
                                    else ~x)
    if descending and x.dtype.kind == "f":
        key = np.where(np.isnan(x), -np.inf, key)
    return np.argsort(key, axis=d, kind="stable")


def _on_device(a: TensorBase, host_index: np.ndarray) -> TensorBase:
    return TensorBase._wrap(a._device.backend.from_numpy(host_index.astype(np.int64)), a._device)


class ReductionMixin:
    """Reductions and orderings of ``Tensor``."""

    __slots__ = ()

    sum = _reduction(reduce_ops.Sum, "sum")
    amax = _reduction(reduce_ops.Amax, "amax")
    amin = _reduction(reduce_ops.Amin, "amin")
    argmax = _index_of_extreme("argmax")
    argmin = _index_of_extreme("argmin")
    max = _extreme(reduce_ops.Amax, Maximum, "argmax", "max")
    min = _extreme(reduce_ops.Amin, Minimum, "argmin", "min")
    any = _logical_reduction("any")
    all = _logical_reduction("all")

    def mean(self, dim=None, keepdim: bool = False) -> TensorBase:
        axes = normalize_axes(dim, self.ndim, "mean")
        if not self.dtype.is_floating_point:
            raise TypeError(f"mean: expected a floating-point tensor, got {self.dtype}")
        n = _reduced_count(self, axes)
        return reduce_ops.Sum.apply(self, axes, bool(keepdim)) * (1.0 / n if n else float("nan"))

    def var(self, dim=None, keepdim: bool = False, correction: int = 1, unbiased=None) -> TensorBase:
        if unbiased is not None:
            correction = 1 if unbiased else 0
        n = _reduced_count(self, normalize_axes(dim, self.ndim, "var"))
        centred = self - self.mean(dim, keepdim=True)
        scale = 1.0 / max(n - correction, 0) if n > correction else float("nan")
        return (centred * centred).sum(dim, keepdim) * scale

    def std(self, dim=None, keepdim: bool = False, correction: int = 1, unbiased=None) -> TensorBase:
        return self.var(dim, keepdim, correction, unbiased).sqrt()

    def cumsum(self, dim: int, dtype=None) -> TensorBase:
        a = self if dtype is None else astype(self, dtype)
        if a.dtype is _dtype.bool_:
            a = astype(a, _dtype.int64)                       # as PyTorch: bools count as int64
        return CumSum.apply(a, normalize_dim(dim, a.ndim, "cumsum"))

    def norm(self, p=2, dim=None, keepdim: bool = False) -> TensorBase:
        """The vector p-norm over ``dim`` (all elements when None), as ``Tensor.norm``."""
        if p == 2 or p == "fro":
            return (self * self).sum(dim, keepdim).sqrt()
        if p == 1:
            return self.abs().sum(dim, keepdim)
        if p == float("inf"):
            return self.abs().amax(dim, keepdim)
        return (self.abs() ** p).sum(dim, keepdim) ** (1.0 / p)

    # ------------------------------------------------------------------ orderings
    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False):
        """(values, indices) along ``dim``; always stable (equal values keep their order)."""
        d = normalize_dim(dim, self.ndim, "sort")
        if self.ndim == 0:
            return ValuesIndices((self, TensorBase._wrap(self._device.backend.zeros((), np.int64), self._device)))
        idx = _sorted_indices(self, d, descending, "sort")
        return ValuesIndices((Gather.apply(self, idx, d), _on_device(self, idx)))

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> TensorBase:
        return self.sort(dim, descending)[1]

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):  # noqa: A002
        """The ``k`` largest (``largest=False``: smallest) entries along ``dim`` and their indices, in
        that order (ties keep their original order)."""
        d = normalize_dim(dim, self.ndim, "topk")
        n = self.shape[d] if self.ndim else 1
        if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
            raise RuntimeError(f"topk: k ({k}) is out of range for dim {d} of size {n} (shape {tuple(self.shape)})")
        if self.ndim == 0:
            return self.sort()
        idx = np.take(_sorted_indices(self, d, largest, "topk"), np.arange(int(k)), axis=d)
        return ValuesIndices((Gather.apply(self, idx, d), _on_device(self, idx)))
