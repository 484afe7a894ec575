"""Tensor methods added for PyTorch programs: ``__index__``, item assignment, ``clone``,
``tril``/``triu``, ``narrow``, ``topk``/``sort``/``gather``, the remaining unary math,
``div(rounding_mode=)`` and ``//``. Each is a thin call of one op's ``Function.apply``."""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._tensor_methods import _Number, _ValuesIndices, _dim, _index_part, _other, _promote, astype
from .autograd.grad_mode import STATE
from .ops import select as Sel
from .ops import unary as U
from .ops.shape import _View
from .tensor import Tensor


# ------------------------------------------------------------------ indexing
def __index__(a: Tensor) -> int:
    """A one-element integer tensor used where Python wants an int: ``seq[i]``, ``x[i:i + n]``, ``range(n)``."""
    if a.dtype.is_floating_point or a.numel() != 1:
        raise TypeError(f"only integer tensors of a single element can be converted to an index "
                        f"(got dtype {a.dtype}, shape {tuple(a.shape)})")
    return int(a.item())


Tensor.__index__ = __index__


def _value_array(a: Tensor, value):
    """The raw array (or number) to write into ``a``: numbers as they are, arrays cast to ``a``'s dtype."""
    if isinstance(value, Tensor):
        if value.device != a.device:
            raise RuntimeError(f"setitem: the value is on {value.device} but the tensor is on {a.device}")
        return value._data if value._data.dtype == a._data.dtype else value._data.astype(a._data.dtype)
    if not isinstance(value, (_Number, list, tuple, np.ndarray)):
        raise TypeError(f"setitem: cannot assign a {type(value).__name__} to a tensor")
    value = _other(a, value)
    if isinstance(value, Tensor):  # a list or an ndarray
        return value._data.astype(a._data.dtype, copy=False)
    if isinstance(value, complex):
        raise TypeError("setitem: complex values are not supported")
    return value


def __setitem__(a: Tensor, idx, value) -> None:
    """``a[idx] = value`` in place, as in PyTorch: the version counter goes up (so a graph that
    saved ``a`` refuses to backward through the old values), and when gradients are on the
    assignment joins the graph: ``a`` gets the gradient outside ``idx``, ``value`` the one inside."""
    idx = tuple(_index_part(i, a) for i in idx) if isinstance(idx, tuple) else _index_part(idx, a)
    v_req = isinstance(value, Tensor) and value.requires_grad
    track = STATE.enabled and (a.requires_grad or v_req)
    if not track:
        try:
            a._data[idx] = _value_array(a, value)
        except IndexError as e:
            raise IndexError(f"index {Sel._describe(idx)} is invalid for a tensor of shape {tuple(a.shape)}: "
                             f"{e}") from None
        except ValueError:  # PyTorch's error type for a shape that does not broadcast
            raise RuntimeError(f"setitem: a value of shape {tuple(getattr(value, 'shape', ()))} cannot be assigned "
                             f"to index {Sel._describe(idx)} of a tensor of shape {tuple(a.shape)}") from None
        a._vc[0] += 1
        return
    if a.requires_grad and a.is_leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation "
                           "(item assignment); wrap it in `with mt.no_grad():` or assign into a clone()")
    if not a.dtype.is_floating_point:
        raise RuntimeError(f"setitem: cannot write a value that requires grad into a tensor of dtype {a.dtype}")
    if getattr(a._data, "base", None) is not None or isinstance(a._node, _View):
        # PyTorch would rewrite the history of the tensor this one is a view of; minitrans
        # cannot reach that tensor, and writing through would leave its gradient wrong
        raise RuntimeError("setitem: assigning into a view while gradients are recorded is not supported "
                           f"(the tensor of shape {tuple(a.shape)} shares storage with another); "
                           "clone() it first")
    if isinstance(value, Tensor):
        if value.device != a.device:
            raise RuntimeError(f"setitem: the value is on {value.device} but the tensor is on {a.device}")
        v = astype(value, a.dtype)
    else:
        v = _value_array(a, value)
    node = Sel.SetItem.apply(a, v, idx)._node
    a._node, a.requires_grad = node, True
    a._vc[0] += 1


Tensor.__setitem__ = __setitem__


def clone(a: Tensor) -> Tensor:
    """A copy in new storage; the gradient flows back to ``a``."""
    return Sel.Clone.apply(a)


Tensor.clone = clone


# ------------------------------------------------------------------ unary math
def _floating(a: Tensor) -> Tensor:
    return a if a._data.dtype.kind == "f" else astype(a, _dtype.float32)


def _need_tensor(a, name: str) -> None:
    if not isinstance(a, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(a).__name__}")


Tensor.sin = lambda a: U.Sin.apply(_floating(a))
Tensor.cos = lambda a: U.Cos.apply(_floating(a))
Tensor.neg = Tensor.negative = lambda a: -a


def _step(name):
    def op(a: Tensor) -> Tensor:
        if (name != "sign" and not a.dtype.is_floating_point) or a.dtype is _dtype.bool_:
            return Sel.Clone.apply(a)         # already whole numbers: a copy, as in PyTorch
        return U.Step.apply(a, name, 0)

    op.__name__ = name
    return op


Tensor.floor, Tensor.ceil, Tensor.trunc, Tensor.sign = (_step(n) for n in ("floor", "ceil", "trunc", "sign"))


def round(a: Tensor, decimals: int = 0) -> Tensor:  # noqa: A001
    """Round half to even (as ``torch.round``), to ``decimals`` places."""
    if not isinstance(decimals, (int, np.integer)):
        raise TypeError(f"round: decimals must be an int, got {type(decimals).__name__}")
    return Sel.Clone.apply(a) if not a.dtype.is_floating_point else U.Step.apply(a, "round", int(decimals))


Tensor.round = round


def _divide_operands(a: Tensor, b):
    b = _other(a, b)
    if isinstance(b, Tensor) and b.device != a.device:
        raise RuntimeError(f"div: tensors on different devices, {a.device} and {b.device}")
    a, b = _promote(a, b, False)
    if isinstance(b, Tensor) and b.dtype.is_floating_point and not a.dtype.is_floating_point:
        a = astype(a, b.dtype)
    return a, b


def div(a: Tensor, other, *, rounding_mode: str | None = None) -> Tensor:
    """a / b; ``rounding_mode="trunc"`` rounds toward zero, ``"floor"`` down (as ``torch.div``).
    With a rounding mode, integer inputs give an integer result and the gradient is zero."""
    _need_tensor(a, "div")
    if rounding_mode is None:
        return a / other
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                         f"{rounding_mode!r}")
    a, b = _divide_operands(a, other)
    if isinstance(b, Tensor) and a.dtype is not b.dtype and not b.dtype.is_floating_point:
        b = astype(b, a.dtype)
    return U.FloorDivide.apply(a, b, rounding_mode)


def floor_divide(a: Tensor, other) -> Tensor:
    return div(a, other, rounding_mode="floor")


def _as_tensor_like(a: Tensor, c) -> Tensor:
    from .tensor import tensor

    return tensor(c, device=a.device)


Tensor.div = Tensor.divide = div
Tensor.floor_divide = Tensor.__floordiv__ = floor_divide
Tensor.__rfloordiv__ = lambda a, c: floor_divide(_as_tensor_like(a, _other(a, c)) if not isinstance(c, Tensor)
                                                 else c, a)


def remainder(a: Tensor, other) -> Tensor:
    """a - floor(a / b)·b: the result takes the divisor's sign, as Python's % and ``torch.remainder``."""
    _need_tensor(a, "remainder")
    a, b = _divide_operands(a, other)
    if isinstance(b, Tensor) and a.dtype is not b.dtype:
        b = astype(b, a.dtype)
    return U.Remainder.apply(a, b)


Tensor.remainder = Tensor.__mod__ = remainder
Tensor.__rmod__ = lambda a, c: remainder(_as_tensor_like(a, _other(a, c)) if not isinstance(c, Tensor) else c, a)


def softmax(a: Tensor, dim: int, dtype=None) -> Tensor:
    from .nn import functional as F

    return F.softmax(a if dtype is None else astype(a, dtype), dim)


def log_softmax(a: Tensor, dim: int, dtype=None) -> Tensor:
    from .nn import functional as F

    return F.log_softmax(a if dtype is None else astype(a, dtype), dim)


Tensor.softmax, Tensor.log_softmax = softmax, log_softmax


# ------------------------------------------------------------------ triangles, slices, selection
def _tri(upper: bool):
    name = "triu" if upper else "tril"

    def op(a: Tensor, diagonal: int = 0) -> Tensor:
        _need_tensor(a, name)
        if a.ndim < 2:
            raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions, got shape {tuple(a.shape)}")
        if not isinstance(diagonal, (int, np.integer)):
            raise TypeError(f"{name}: diagonal must be an int, got {type(diagonal).__name__}")
        return Sel.TriMask.apply(a, int(diagonal), upper)

    op.__name__ = name
    return op


tril, triu = _tri(False), _tri(True)
Tensor.tril, Tensor.triu = tril, triu


def narrow(a: Tensor, dim: int, start, length: int) -> Tensor:
    """The slice ``start:start + length`` of dim ``dim``: a view, as ``torch.narrow``."""
    _need_tensor(a, "narrow")
    if a.ndim == 0:
        raise RuntimeError("narrow() cannot be applied to a 0-dim tensor")
    d = _dim(dim, a.ndim, "narrow")
    n = a.shape[d]
    start, length = int(start), int(length)          # a one-element int tensor works as start
    if not -n <= start <= n:
        raise IndexError(f"narrow: start ({start}) is out of range for dim {d} of size {n}")
    if start < 0:
        start += n
    if length < 0 or start + length > n:
        raise RuntimeError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({n}) of dim {d}")
    sl = [slice(None)] * a.ndim
    sl[d] = slice(start, start + length)
    return a[tuple(sl)]


Tensor.narrow = narrow


def _sorted_indices(a: Tensor, d: int, descending: bool, name: str):
    if a.device.type != "cpu":
        raise NotImplementedError(f"{name} is not implemented on device '{a.device}' (no kernel); "
                                  "move the tensor to the CPU with .cpu() first")
    x = a._data
    # stable: equal values keep their order; descending sorts the negated key (NaN sorts as largest)
    key = x if not descending else (-x if x.dtype.kind == "f" else -x.astype(np.int64) if x.dtype.kind != "b"
                                    else ~x)
    if descending and x.dtype.kind == "f":
        key = np.where(np.isnan(x), -np.inf, key)
    return np.argsort(key, axis=d, kind="stable")


def sort(a: Tensor, dim: int = -1, descending: bool = False, stable: bool = False):
    _need_tensor(a, "sort")
    d = _dim(dim, a.ndim, "sort")
    if a.ndim == 0:
        return _ValuesIndices((a, Tensor._wrap(np.zeros((), np.int64), a.device)))
    idx = _sorted_indices(a, d, descending, "sort")
    return _ValuesIndices((Sel.Gather.apply(a, idx, d), Tensor._wrap(idx.astype(np.int64), a.device)))


def argsort(a: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    return sort(a, dim, descending)[1]


def topk(a: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):  # noqa: A002
    """The ``k`` largest (``largest=False``: smallest) entries along ``dim`` and their indices, in
    that order (ties keep their original order)."""
    _need_tensor(a, "topk")
    d = _dim(dim, a.ndim, "topk")
    n = a.shape[d] if a.ndim else 1
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise RuntimeError(f"topk: k ({k}) is out of range for dim {d} of size {n} (shape {tuple(a.shape)})")
    if a.ndim == 0:
        return sort(a)
    idx = np.take(_sorted_indices(a, d, largest, "topk"), np.arange(int(k)), axis=d)
    return _ValuesIndices((Sel.Gather.apply(a, idx, d), Tensor._wrap(idx.astype(np.int64), a.device)))


def gather(a: Tensor, dim: int, index: Tensor) -> Tensor:
    """out[i][j] = a[i][index[i][j]] along ``dim`` (``torch.gather``); ``index`` has a's rank."""
    _need_tensor(a, "gather")
    _need_tensor(index, "gather")
    d = _dim(dim, a.ndim, "gather")
    if index.dtype is not _dtype.int64:
        raise RuntimeError(f"gather(): expected dtype int64 for index, got {index.dtype}")
    if index.ndim != a.ndim:
        raise RuntimeError(f"gather: index has {index.ndim} dims but the input has {a.ndim} (shape {tuple(a.shape)})")
    if any(index.shape[i] > a.shape[i] for i in range(a.ndim) if i != d):
        raise RuntimeError(f"gather: index of shape {tuple(index.shape)} is larger than the input's "
                           f"{tuple(a.shape)} outside dim {d}")
    ix = index.numpy()
    if ix.size and (ix.min() < 0 or ix.max() >= a.shape[d]):
        raise RuntimeError(f"gather: index {int(ix.min()) if ix.min() < 0 else int(ix.max())} is out of bounds "
                           f"for dim {d} of size {a.shape[d]}")
    sl = tuple(slice(0, index.shape[i]) if i != d else slice(None) for i in range(a.ndim))
    return Sel.Gather.apply(a[sl], ix, d)


Tensor.sort, Tensor.argsort, Tensor.topk, Tensor.gather = sort, argsort, topk, gather


# ------------------------------------------------------------------ sampling
def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *, generator=None) -> Tensor:
    """Indices drawn from the categorical distribution(s) in the rows of ``input`` (non-negative
    weights, need not sum to 1), from the global generator (``manual_seed`` fixes them)."""
    from .random import generator as _gen

    _need_tensor(input, "multinomial")
    if generator is not None:
        raise NotImplementedError("multinomial: a separate generator is not supported; use mt.manual_seed")
    if input.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got shape {tuple(input.shape)}")
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got {input.dtype}")
    if not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise RuntimeError(f"multinomial: cannot sample {num_samples} samples (must be a positive int)")
    w = input.numpy().astype(np.float64).reshape(-1, input.shape[-1])
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
    g = _gen()
    if replacement:
        cdf = np.cumsum(w, axis=1)
        u = g.random((w.shape[0], int(num_samples))) * cdf[:, -1:]
        out = np.stack([np.searchsorted(c, r, side="right") for c, r in zip(cdf, u)])
        out = np.minimum(out, n - 1)
    else:
        # sequential draws without replacement = the smallest Exp(1)/w keys (zero weight: never)
        with np.errstate(divide="ignore"):
            keys = g.standard_exponential(w.shape) / w
        out = np.argsort(keys, axis=1, kind="stable")[:, : int(num_samples)]
    out = out.astype(np.int64).reshape(*input.shape[:-1], int(num_samples))
    return Tensor._wrap(input.device.backend.from_numpy(out) if input.device.type != "cpu" else out, input.device)


Tensor.multinomial = multinomial


# ------------------------------------------------------------------ top-level functions
def _fn(name):
    def f(a, *args, **kwargs):
        _need_tensor(a, name)
        return getattr(a, name)(*args, **kwargs)

    f.__name__ = name
    return f


sin, cos, neg, negative, sign, floor, ceil, trunc, clone = (
    _fn(n) for n in ("sin", "cos", "neg", "negative", "sign", "floor", "ceil", "trunc", "clone"))


def isnan(a: Tensor) -> Tensor:
    return Tensor._wrap(a._data != a._data, a.device)


def isinf(a: Tensor) -> Tensor:
    return Tensor._wrap(a.device.backend.logical_not(a.device.backend.isfinite(a._data)) & (a._data == a._data),
                        a.device)


def isfinite(a: Tensor) -> Tensor:
    return Tensor._wrap(a.device.backend.isfinite(a._data), a.device)


Tensor.isnan, Tensor.isinf, Tensor.isfinite = isnan, isinf, isfinite


def numel(a: Tensor) -> int:
    return a.numel()


# ------------------------------------------------------------------ new tensors like this one
def _new(fill):
    def op(a: Tensor, *size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
        from .tensor import _shape_arg, full

        return full(_shape_arg(size), fill, dtype=dtype or a.dtype, device=device or a.device,
                    requires_grad=requires_grad)

    return op


Tensor.new_zeros, Tensor.new_ones, Tensor.new_empty = _new(0), _new(1), _new(0)


def new_full(a: Tensor, size, fill_value, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    from .tensor import full

    return full(size, fill_value, dtype=dtype or a.dtype, device=device or a.device, requires_grad=requires_grad)


def new_tensor(a: Tensor, data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    from .tensor import tensor

    return tensor(data, dtype=dtype or a.dtype, device=device or a.device, requires_grad=requires_grad)


Tensor.new_full, Tensor.new_tensor = new_full, new_tensor
Tensor.type_as = lambda a, other: astype(a, other.dtype)


# ------------------------------------------------------------------ more shape and math
def cumsum(a: Tensor, dim: int, dtype=None) -> Tensor:
    _need_tensor(a, "cumsum")
    a = a if dtype is None else astype(a, dtype)
    if a.dtype is _dtype.bool_:
        a = astype(a, _dtype.int64)                       # as PyTorch: bools count as int64
    return Sel.CumSum.apply(a, _dim(dim, a.ndim, "cumsum"))


def flip(a: Tensor, dims) -> Tensor:
    """A copy of ``a`` with the order of the given dims reversed (a copy, as in PyTorch)."""
    _need_tensor(a, "flip")
    dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    sl = [slice(None)] * a.ndim
    for d in dims:
        sl[_dim(d, a.ndim, "flip")] = slice(None, None, -1)
    return clone(a[tuple(sl)])


def repeat(a: Tensor, *sizes) -> Tensor:
    """``a`` tiled ``sizes[i]`` times along dim i (``torch.Tensor.repeat``; leading sizes add dims)."""
    from ._tensor_methods import _size_args

    sizes = _size_args(sizes)
    if len(sizes) < a.ndim:
        raise RuntimeError(f"repeat: number of repeat dims ({len(sizes)}) can not be smaller than the number of "
                           f"dimensions of tensor ({a.ndim})")
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"repeat: repeats must be non-negative, got {sizes}")
    shape = (1,) * (len(sizes) - a.ndim) + tuple(a.shape)
    inter = [v for n in shape for v in (1, n)]               # (1, s0, 1, s1, ...)
    big = [v for r, n in zip(sizes, shape) for v in (r, n)]  # (r0, s0, r1, s1, ...)
    return a.reshape(*inter).expand(*big).reshape(*[r * n for r, n in zip(sizes, shape)])


def norm(a: Tensor, p=2, dim=None, keepdim: bool = False) -> Tensor:
    """The vector p-norm over ``dim`` (all elements when None), as ``Tensor.norm``."""
    if p == 2 or p == "fro":
        return (a * a).sum(dim, keepdim).sqrt()
    if p == 1:
        return a.abs().sum(dim, keepdim)
    if p == float("inf"):
        return a.abs().amax(dim, keepdim)
    return (a.abs() ** p).sum(dim, keepdim) ** (1.0 / p)


def masked_fill_(a: Tensor, mask: Tensor, value) -> Tensor:
    """In place: ``value`` wherever the (broadcast) bool mask is True."""
    if not isinstance(mask, Tensor) or mask.dtype is not _dtype.bool_:
        raise TypeError("masked_fill_: mask must be a bool Tensor")
    full = mask.expand(*a.shape) if tuple(mask.shape) != tuple(a.shape) else mask
    a[full] = value.item() if isinstance(value, Tensor) else value
    return a


def bmm(a: Tensor, b: Tensor) -> Tensor:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.ndim != 3 or b.ndim != 3:
        raise RuntimeError("bmm: expected two 3-D tensors (batch, n, m) and (batch, m, p), got shapes "
                           f"{tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}")
    if a.shape[0] != b.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {a.shape[0]} and {b.shape[0]}")
    return a @ b


def outer(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim != 1 or b.ndim != 1:
        raise RuntimeError(f"outer: expected 1-D tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return a.unsqueeze(1) * b.unsqueeze(0)


Tensor.cumsum, Tensor.flip, Tensor.repeat, Tensor.norm = cumsum, flip, repeat, norm
Tensor.masked_fill_, Tensor.bmm, Tensor.outer = masked_fill_, bmm, outer


def inference_mode(mode: bool = True):
    """``no_grad`` (minitrans has no separate inference tensors)."""
    from .autograd import enable_grad, no_grad

    return no_grad() if mode else enable_grad()


def repeat_interleave(a: Tensor, repeats, dim=None) -> Tensor:
    """Each element repeated ``repeats`` times along ``dim`` (flattened first when None)."""
    _need_tensor(a, "repeat_interleave")
    if dim is None:
        a, dim = a.reshape(-1), 0
    d = _dim(dim, a.ndim, "repeat_interleave")
    reps = repeats.numpy() if isinstance(repeats, Tensor) else repeats
    idx = np.repeat(np.arange(a.shape[d]), reps)
    return a[(slice(None),) * d + (idx,)]


Tensor.repeat_interleave = repeat_interleave
