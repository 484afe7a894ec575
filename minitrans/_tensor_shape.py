"""Tensor shape and selection methods: reshape/view, permute, expand, squeeze, indexing, split,
narrow, flip, repeat, tril/triu, gather, clone, bmm and outer."""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._dims import normalize_dim
from ._tensor_core import TensorBase
from .ops import select as select_ops
from .ops import shape as shape_ops


def sizes_from_args(shape) -> tuple:
    """The sizes given as ``f(2, 3)`` or ``f((2, 3))``, checked to be ints (-1 allowed)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if type(s) is not int:      # plain ints (the common case) need no conversion
            break
    else:
        return tuple(shape)
    for s in shape:
        if not isinstance(s, (int, np.integer)):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def _index_part(i, a: TensorBase):
    if isinstance(i, TensorBase):
        if i.device != a.device:
            raise RuntimeError(f"index tensor is on {i.device} but the indexed tensor is on {a.device}")
        if i.dtype.is_floating_point:
            raise IndexError(f"tensors used as indices must be int64 or bool, got {i.dtype}")
        return i._data
    if isinstance(i, (list, np.ndarray)):
        arr = np.asarray(i)
        if arr.dtype.kind == "f":
            raise IndexError(f"arrays used as indices must be integer or bool, got {arr.dtype}")
        return arr
    if isinstance(i, float):
        raise IndexError(f"indices must be integers, slices, None, ..., or int/bool tensors, got float {i}")
    return i


def index_key(a: TensorBase, idx):
    """``idx`` checked and with its tensors replaced by their arrays, ready to index ``a``'s array."""
    return tuple(_index_part(i, a) for i in idx) if isinstance(idx, tuple) else _index_part(idx, a)


def _slice_along(a: TensorBase, d: int, part: slice) -> TensorBase:
    """``a[..., part, ...]`` with ``part`` at dim ``d`` (a view)."""
    return a[(slice(None),) * d + (part,)]


def _triangle(upper: bool):
    name = "triu" if upper else "tril"

    def op(a: TensorBase, diagonal: int = 0) -> TensorBase:
        if a.ndim < 2:
            raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions, got shape {tuple(a.shape)}")
        if not isinstance(diagonal, (int, np.integer)):
            raise TypeError(f"{name}: diagonal must be an int, got {type(diagonal).__name__}")
        return select_ops.TriMask.apply(a, int(diagonal), upper)

    op.__name__ = name
    op.__doc__ = f"A copy with the elements {'below' if upper else 'above'} the ``diagonal``-th diagonal zeroed."
    return op


class ShapeMixin:
    """Shape changes and selection of ``Tensor``."""

    __slots__ = ()

    def reshape(self, *shape) -> TensorBase:
        shape = sizes_from_args(shape)
        if shape == self.shape:
            return self
        if shape and min(shape) < 0 and (min(shape) < -1 or shape.count(-1) > 1):
            raise ValueError(f"reshape: invalid shape {shape} for a tensor of shape {tuple(self.shape)}: sizes "
                             "must be non-negative, with at most one -1")
        return shape_ops.Reshape.apply(self, shape)

    view = reshape

    def view_as(self, other: TensorBase) -> TensorBase:
        return self.reshape(other.shape)

    reshape_as = view_as

    def contiguous(self) -> TensorBase:
        """``self`` when its array is C-contiguous, else a contiguous copy (gradient passes through)."""
        return self if self._device.backend.is_contiguous(self._data) else shape_ops.Contiguous.apply(self)

    def is_contiguous(self) -> bool:
        return bool(self._device.backend.is_contiguous(self._data))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> TensorBase:
        if self.ndim == 0:
            return self.reshape(1)
        s, e = normalize_dim(start_dim, self.ndim, "flatten"), normalize_dim(end_dim, self.ndim, "flatten")
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape "
                             f"{tuple(self.shape)}")
        return self.reshape(*self.shape[:s], -1, *self.shape[e + 1:])

    def permute(self, *dims) -> TensorBase:
        dims = sizes_from_args(dims)
        n = self._data.ndim
        axes = [d + n if d < 0 else d for d in dims if -n <= d < n]
        if len(axes) != n or len(dims) != n or len(set(axes)) != n:
            raise ValueError(f"permute: dims {dims} are not a permutation of the {n} dims of shape {tuple(self.shape)}")
        return shape_ops.Permute.apply(self, tuple(axes))

    def transpose(self, dim0: int, dim1: int) -> TensorBase:
        d0, d1 = normalize_dim(dim0, self.ndim, "transpose"), normalize_dim(dim1, self.ndim, "transpose")
        axes = list(range(self.ndim))
        axes[d0], axes[d1] = axes[d1], axes[d0]
        return shape_ops.Permute.apply(self, tuple(axes))

    def t(self) -> TensorBase:
        return self.transpose(0, 1) if self.ndim == 2 else self

    @property
    def T(self) -> TensorBase:
        return self.permute(*range(self.ndim - 1, -1, -1))

    @property
    def mT(self) -> TensorBase:
        return self.transpose(-2, -1)

    def expand(self, *shape) -> TensorBase:
        shape = sizes_from_args(shape)
        lead = len(shape) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: target shape {shape} has fewer dims than the tensor's {tuple(self.shape)}")
        full = tuple(self.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(shape))
        return shape_ops.Expand.apply(self, full)

    def expand_as(self, other: TensorBase) -> TensorBase:
        return self.expand(*other.shape)

    def squeeze(self, dim=None) -> TensorBase:
        if dim is None:
            return self.reshape(*[s for s in self.shape if s != 1])
        d = normalize_dim(dim, self.ndim, "squeeze")
        if self.shape[d] != 1:
            return self
        return self.reshape(*self.shape[:d], *self.shape[d + 1:])

    def unsqueeze(self, dim: int) -> TensorBase:
        d = normalize_dim(dim, self.ndim + 1, "unsqueeze")
        return self.reshape(*self.shape[:d], 1, *self.shape[d:])

    # ------------------------------------------------------------------ selection
    def __getitem__(self, idx) -> TensorBase:
        return shape_ops.GetItem.apply(self, index_key(self, idx))

    def split(self, split_size, dim: int = 0):
        d = normalize_dim(dim, self.ndim, "split")
        n = self.shape[d]
        if isinstance(split_size, int) and split_size <= 0:
            raise ValueError(f"split: split_size must be a positive int, got {split_size}")
        sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else []) \
            if isinstance(split_size, int) else list(split_size)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n} (dim {d} of shape {tuple(self.shape)})")
        starts = np.cumsum([0] + sizes[:-1]).tolist()
        return tuple(_slice_along(self, d, slice(start, start + s)) for start, s in zip(starts, sizes))

    def chunk(self, chunks: int, dim: int = 0):
        n = self.shape[normalize_dim(dim, self.ndim, "chunk")]
        if not isinstance(chunks, int) or chunks <= 0:
            raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
        return self.split(max(1, -(-n // chunks)), dim)

    def narrow(self, dim: int, start, length: int) -> TensorBase:
        """The slice ``start:start + length`` of dim ``dim``: a view, as ``torch.narrow``."""
        if self.ndim == 0:
            raise RuntimeError("narrow() cannot be applied to a 0-dim tensor")
        d = normalize_dim(dim, self.ndim, "narrow")
        n = self.shape[d]
        start, length = int(start), int(length)          # a one-element int tensor works as start
        if not -n <= start <= n:
            raise IndexError(f"narrow: start ({start}) is out of range for dim {d} of size {n}")
        if start < 0:
            start += n
        if length < 0 or start + length > n:
            raise RuntimeError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({n}) of dim {d}")
        return _slice_along(self, d, slice(start, start + length))

    def flip(self, dims) -> TensorBase:
        """A copy with the order of the given dims reversed (a copy, as in PyTorch)."""
        dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
        parts = [slice(None)] * self.ndim
        for d in dims:
            parts[normalize_dim(d, self.ndim, "flip")] = slice(None, None, -1)
        return self[tuple(parts)].clone()

    def repeat(self, *sizes) -> TensorBase:
        """Tiled ``sizes[i]`` times along dim i (``torch.Tensor.repeat``; leading sizes add dims)."""
        sizes = sizes_from_args(sizes)
        if len(sizes) < self.ndim:
            raise RuntimeError(f"repeat: number of repeat dims ({len(sizes)}) can not be smaller than the number "
                               f"of dimensions of tensor ({self.ndim})")
        if any(s < 0 for s in sizes):
            raise RuntimeError(f"repeat: repeats must be non-negative, got {sizes}")
        shape = (1,) * (len(sizes) - self.ndim) + tuple(self.shape)
        interleaved = [v for n in shape for v in (1, n)]               # (1, s0, 1, s1, ...)
        tiled = [v for r, n in zip(sizes, shape) for v in (r, n)]      # (r0, s0, r1, s1, ...)
        return self.reshape(*interleaved).expand(*tiled).reshape(*[r * n for r, n in zip(sizes, shape)])

    def repeat_interleave(self, repeats, dim=None) -> TensorBase:
        """Each element repeated ``repeats`` times along ``dim`` (flattened first when None)."""
        a = self
        if dim is None:
            a, dim = a.reshape(-1), 0
        d = normalize_dim(dim, a.ndim, "repeat_interleave")
        reps = repeats.numpy() if isinstance(repeats, TensorBase) else repeats
        return _slice_along(a, d, np.repeat(np.arange(a.shape[d]), reps))

    tril, triu = _triangle(False), _triangle(True)

    def gather(self, dim: int, index: TensorBase) -> TensorBase:
        """out[i][j] = self[i][index[i][j]] along ``dim`` (``torch.gather``); ``index`` has self's rank."""
        if not isinstance(index, TensorBase):
            raise TypeError(f"gather: expected a Tensor, got {type(index).__name__}")
        d = normalize_dim(dim, self.ndim, "gather")
        if index.dtype is not _dtype.int64:
            raise RuntimeError(f"gather(): expected dtype int64 for index, got {index.dtype}")
        if index.ndim != self.ndim:
            raise RuntimeError(f"gather: index has {index.ndim} dims but the input has {self.ndim} "
                               f"(shape {tuple(self.shape)})")
        if any(index.shape[i] > self.shape[i] for i in range(self.ndim) if i != d):
            raise RuntimeError(f"gather: index of shape {tuple(index.shape)} is larger than the input's "
                               f"{tuple(self.shape)} outside dim {d}")
        ix = index.numpy()
        if ix.size and (ix.min() < 0 or ix.max() >= self.shape[d]):
            raise RuntimeError(f"gather: index {int(ix.min()) if ix.min() < 0 else int(ix.max())} is out of "
                               f"bounds for dim {d} of size {self.shape[d]}")
        inner = tuple(slice(0, index.shape[i]) if i != d else slice(None) for i in range(self.ndim))
        return select_ops.Gather.apply(self[inner], ix, d)

    def clone(self) -> TensorBase:
        """A copy in new storage; the gradient flows back to ``self``."""
        return select_ops.Clone.apply(self)

    def bmm(self, other: TensorBase) -> TensorBase:
        if not isinstance(other, TensorBase) or self.ndim != 3 or other.ndim != 3:
            raise RuntimeError("bmm: expected two 3-D tensors (batch, n, m) and (batch, m, p), got shapes "
                               f"{tuple(self.shape)} and {tuple(getattr(other, 'shape', ()))}")
        if self.shape[0] != other.shape[0]:
            raise RuntimeError(f"bmm: batch sizes differ: {self.shape[0]} and {other.shape[0]}")
        return self @ other

    def outer(self, other: TensorBase) -> TensorBase:
        if self.ndim != 1 or other.ndim != 1:
            raise RuntimeError(f"outer: expected 1-D tensors, got shapes {tuple(self.shape)} and {tuple(other.shape)}")
        return self.unsqueeze(1) * other.unsqueeze(0)
