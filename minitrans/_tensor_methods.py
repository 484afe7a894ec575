"""Tensor operators and methods: each a thin call of one op's ``Function.apply``."""
from __future__ import annotations

import numbers

import numpy as np

from . import _dtype
from .ops import elementwise as E
from .ops import linalg as L
from .ops import reduce as R
from .ops import shape as S
from .tensor import Tensor

_Number = (numbers.Number, np.generic)


def _other(a: Tensor, b):
    """Validate the second operand of a binary op: a Tensor, a number, or a bool/number array."""
    if isinstance(b, np.generic):
        return b.item()  # a NumPy scalar acts as a Python number: np.float64 must not promote float32 tensors
    if isinstance(b, Tensor) or isinstance(b, _Number):
        return b
    if isinstance(b, (list, tuple, np.ndarray)):
        from .tensor import tensor

        return tensor(b, dtype=a.dtype if a.dtype.is_floating_point else None, device=a.device)
    raise TypeError(f"unsupported operand type for a Tensor op: {type(b).__name__}")


def _promote(a: Tensor, b, div: bool):
    """PyTorch's type promotion where it differs from NumPy's: an int/bool tensor meets a
    float (tensor or Python float) -> the float dtype (float32 for a Python float, never
    float64); int / int -> float32."""
    af = a._data.dtype.kind == "f"
    if isinstance(b, Tensor):
        bf = b._data.dtype.kind == "f"
        if af and not bf:
            b = astype(b, a.dtype)
        elif bf and not af:
            a = astype(a, b.dtype)
        elif not af and not bf and div:
            a, b = astype(a, _dtype.float32), astype(b, _dtype.float32)
    elif not af and (div or isinstance(b, float)):
        a = astype(a, _dtype.float32)
    return a, b


def _binary(fn, name):
    div = name == "truediv"

    def op(a, b):
        b = _other(a, b)
        if div or a._data.dtype.kind != "f" or (isinstance(b, Tensor) and b._data.dtype.kind != "f"):
            a, b = _promote(a, b, div)
        return fn.apply(a, b)

    def rop(a, b):
        b = _other(a, b)
        if div or a._data.dtype.kind != "f" or (isinstance(b, Tensor) and b._data.dtype.kind != "f"):
            a, b = _promote(a, b, div)
        return fn.apply(b, a)

    op.__name__, rop.__name__ = f"__{name}__", f"__r{name}__"
    return op, rop


Tensor.__add__, Tensor.__radd__ = _binary(E.Add, "add")
Tensor.__sub__, Tensor.__rsub__ = _binary(E.Sub, "sub")
Tensor.__mul__, Tensor.__rmul__ = _binary(E.Mul, "mul")
Tensor.__truediv__, Tensor.__rtruediv__ = _binary(E.Div, "truediv")
Tensor.__matmul__ = lambda a, b: matmul(a, b)
Tensor.__rmatmul__ = lambda a, b: matmul(_other(a, b), a)


def __neg__(a: Tensor) -> Tensor:
    if a.dtype is _dtype.bool_:
        raise TypeError("neg: the - operator is not supported on bool tensors; use ~ or logical_not()")
    return E.Neg.apply(a)


Tensor.__neg__ = __neg__
Tensor.__pos__ = lambda a: a


def pow(a: Tensor, p) -> Tensor:
    p = _other(a, p)
    if isinstance(p, _Number):
        if isinstance(p, float):  # int ** 0.5 -> float32, as PyTorch (NumPy: float64)
            a = _floating(a)
        elif a.dtype is _dtype.bool_:  # bool ** 2 -> int64 (NumPy: int8, which has no minitrans dtype)
            a = astype(a, _dtype.int64)
        return E.PowScalar.apply(a, p)
    a, p = _promote(a, p, False)
    return E.Pow.apply(a, p)


def __rpow__(a: Tensor, c):
    c = _other(a, c)
    if isinstance(c, _Number):
        if isinstance(c, float):  # 0.5 ** int_tensor -> float32 (was truncated to int)
            a = _floating(a)
        elif a.dtype is _dtype.bool_:  # 2 ** bool_tensor -> int64
            a = astype(a, _dtype.int64)
        return E.RPowScalar.apply(a, c)
    c, a = _promote(c, a, False)
    return E.Pow.apply(c, a)


Tensor.__pow__ = Tensor.pow = pow
Tensor.__rpow__ = __rpow__


def _compare(name, f):
    def op(a, b):
        b = _other(a, b)
        bd = b._data if isinstance(b, Tensor) else b
        if isinstance(b, Tensor) and b._device != a._device:
            raise RuntimeError(f"{name}: tensors on different devices, {a._device} and {b._device}")
        try:
            return Tensor._wrap(f(a._data, bd), a._device)
        except ValueError:
            raise ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(getattr(bd, 'shape', ()))} "
                             "cannot be broadcast together") from None

    op.__name__ = f"__{name}__"
    return op


Tensor.__lt__ = _compare("lt", lambda x, y: x < y)
Tensor.__le__ = _compare("le", lambda x, y: x <= y)
Tensor.__gt__ = _compare("gt", lambda x, y: x > y)
Tensor.__ge__ = _compare("ge", lambda x, y: x >= y)
Tensor.__eq__ = Tensor.eq = _compare("eq", lambda x, y: x == y)
Tensor.__ne__ = Tensor.ne = _compare("ne", lambda x, y: x != y)
Tensor.lt, Tensor.le, Tensor.gt, Tensor.ge = Tensor.__lt__, Tensor.__le__, Tensor.__gt__, Tensor.__ge__
Tensor.__hash__ = lambda self: id(self)


def _logical(name, f):
    def op(a, b):
        b = _other(a, b)
        if a.dtype is not _dtype.bool_ or (isinstance(b, Tensor) and b.dtype is not _dtype.bool_):
            raise TypeError(f"{name}: expected bool tensors, got {a.dtype}"
                            f"{' and ' + str(b.dtype) if isinstance(b, Tensor) else ''}")
        return Tensor._wrap(f(a._data, b._data if isinstance(b, Tensor) else b), a._device)

    return op


Tensor.__and__ = Tensor.logical_and = _logical("and", lambda x, y: x & y)
Tensor.__or__ = Tensor.logical_or = _logical("or", lambda x, y: x | y)
Tensor.__xor__ = _logical("xor", lambda x, y: x ^ y)


def __invert__(a: Tensor) -> Tensor:
    if a.dtype is not _dtype.bool_:
        raise TypeError(f"~ expects a bool tensor, got {a.dtype}")
    return Tensor._wrap(~a._data, a._device)


Tensor.__invert__ = Tensor.logical_not = __invert__

# ------------------------------------------------------------------ unary math
def _floating(a: Tensor) -> Tensor:
    """Float ops on int/bool tensors compute in float32, as in PyTorch."""
    return a if a._data.dtype.kind == "f" else astype(a, _dtype.float32)


Tensor.exp = lambda a: E.Exp.apply(_floating(a))
Tensor.log = lambda a: E.Log.apply(_floating(a))
Tensor.sqrt = lambda a: E.Sqrt.apply(_floating(a))
Tensor.rsqrt = lambda a: E.PowScalar.apply(_floating(a), -0.5)
Tensor.abs = Tensor.__abs__ = lambda a: E.Abs.apply(a)
Tensor.tanh = lambda a: E.Tanh.apply(_floating(a))
Tensor.sigmoid = lambda a: E.Sigmoid.apply(_floating(a))
Tensor.relu = lambda a: E.Relu.apply(a)
Tensor.square = lambda a: E.PowScalar.apply(a, 2)


def gelu(a: Tensor, approximate: str = "tanh") -> Tensor:
    if approximate not in ("tanh",):
        raise ValueError(f"gelu: only approximate='tanh' is implemented, got {approximate!r}")
    return E.Gelu.apply(_floating(a))


Tensor.gelu = gelu


def clamp(a: Tensor, min=None, max=None) -> Tensor:
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    min, max = (v.item() if isinstance(v, np.generic) else v for v in (min, max))
    return E.Clamp.apply(a, min, max)


Tensor.clamp = Tensor.clip = clamp
Tensor.maximum = lambda a, b: E.Maximum.apply(*_promote(a, _other(a, b), False))
Tensor.minimum = lambda a, b: E.Minimum.apply(*_promote(a, _other(a, b), False))


def masked_fill(a: Tensor, mask: Tensor, value) -> Tensor:
    if not isinstance(mask, Tensor) or mask.dtype is not _dtype.bool_:
        raise TypeError(f"masked_fill: mask must be a bool Tensor, got "
                        f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
    if mask.device != a.device:
        raise RuntimeError(f"masked_fill: mask is on {mask.device} but the input is on {a.device}")
    if isinstance(value, Tensor):
        value = value.item()
    if not isinstance(value, _Number):
        raise TypeError(f"masked_fill: value must be a number or a 1-element Tensor, got {type(value).__name__}")
    return S.MaskedFill.apply(a, mask._data, value)


Tensor.masked_fill = masked_fill


def astype(a: Tensor, dtype) -> Tensor:
    d = _dtype.as_dtype(dtype)
    if d.np == a._data.dtype:
        return a
    if a.requires_grad and d.is_floating_point:
        return E.Cast.apply(a, d.np)
    return Tensor._wrap(a._data.astype(d.np), a._device)


Tensor.astype = Tensor.type = astype

# ------------------------------------------------------------------ reductions


def _reduce(fn, name):
    def op(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
        return fn.apply(a, R.normalize_axes(dim, a.ndim, name), bool(keepdim))

    op.__name__ = name
    return op


Tensor.sum = _reduce(R.Sum, "sum")
Tensor.amax = _reduce(R.Amax, "amax")
Tensor.amin = _reduce(R.Amin, "amin")


def mean(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    axes = R.normalize_axes(dim, a.ndim, "mean")
    if not a.dtype.is_floating_point:
        raise TypeError(f"mean: expected a floating-point tensor, got {a.dtype}")
    n = a.numel() if axes is None else int(np.prod([a.shape[i] for i in axes]))
    return R.Sum.apply(a, axes, bool(keepdim)) * (1.0 / n if n else float("nan"))


def var(a: Tensor, dim=None, keepdim: bool = False, correction: int = 1, unbiased=None) -> Tensor:
    if unbiased is not None:
        correction = 1 if unbiased else 0
    axes = R.normalize_axes(dim, a.ndim, "var")
    n = a.numel() if axes is None else int(np.prod([a.shape[i] for i in axes]))
    centred = a - mean(a, dim, keepdim=True)
    return (centred * centred).sum(dim, keepdim) * (1.0 / max(n - correction, 0) if n > correction else float("nan"))


def std(a: Tensor, dim=None, keepdim: bool = False, correction: int = 1, unbiased=None) -> Tensor:
    return var(a, dim, keepdim, correction, unbiased).sqrt()


Tensor.mean, Tensor.var, Tensor.std = mean, var, std


class _ValuesIndices(tuple):
    """(values, indices) with ``.values`` / ``.indices``, as returned by max(dim)/min(dim), topk and sort,
    like ``torch.return_types.max`` / ``topk`` / ``sort``."""

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


def _extreme(fn, argfn, name):
    def op(a: Tensor, dim=None, keepdim: bool = False):
        if isinstance(dim, Tensor):  # max(a, b): elementwise
            return (E.Maximum if name == "max" else E.Minimum).apply(a, dim)
        if dim is None:
            return fn.apply(a, None, False)
        (ax,) = R.normalize_axes(dim, a.ndim, name)
        values = fn.apply(a, (ax,), bool(keepdim))
        idx = argfn(a, ax, keepdim)
        return _ValuesIndices((values, idx))

    op.__name__ = name
    return op


def _nonempty_arg(a: Tensor, dim, name: str) -> None:
    """argmax/argmin over nothing has no answer: a clean error instead of NumPy's."""
    if a.numel() == 0 and (dim is None or a.shape[R.normalize_axes(dim, a.ndim, name)[0]] == 0):
        raise RuntimeError(f"{name}(): cannot reduce an empty tensor of shape {tuple(a.shape)}"
                           + ("" if dim is None else f" along dim {dim}"))


def argmax(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    xp = a._device.backend
    _nonempty_arg(a, dim, "argmax")
    if dim is None:
        return Tensor._wrap(xp.asarray(xp.argmax(a._data)).astype(np.int64), a._device)
    (ax,) = R.normalize_axes(dim, a.ndim, "argmax")
    return Tensor._wrap(xp.argmax(a._data, axis=ax, keepdims=bool(keepdim)).astype(np.int64), a._device)


def argmin(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    xp = a._device.backend
    _nonempty_arg(a, dim, "argmin")
    if dim is None:
        return Tensor._wrap(xp.asarray(xp.argmin(a._data)).astype(np.int64), a._device)
    (ax,) = R.normalize_axes(dim, a.ndim, "argmin")
    return Tensor._wrap(xp.argmin(a._data, axis=ax, keepdims=bool(keepdim)).astype(np.int64), a._device)


Tensor.argmax, Tensor.argmin = argmax, argmin
Tensor.max = _extreme(R.Amax, argmax, "max")
Tensor.min = _extreme(R.Amin, argmin, "min")


def _bool_reduce(name):
    def op(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
        xp = a._device.backend
        axes = R.normalize_axes(dim, a.ndim, name)
        return Tensor._wrap(xp.asarray(getattr(xp, name)(a._data, axis=axes, keepdims=keepdim)), a._device)

    return op


Tensor.any, Tensor.all = _bool_reduce("any"), _bool_reduce("all")

# ------------------------------------------------------------------ shape


def _size_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, (int, np.integer)):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def reshape(a: Tensor, *shape) -> Tensor:
    shape = _size_args(shape)
    if shape == a.shape:
        return a
    if shape and min(shape) < 0 and (min(shape) < -1 or shape.count(-1) > 1):
        raise ValueError(f"reshape: invalid shape {shape} for a tensor of shape {tuple(a.shape)}: sizes must be "
                         "non-negative, with at most one -1")
    return S.Reshape.apply(a, shape)


Tensor.reshape = Tensor.view = reshape


def contiguous(a: Tensor) -> Tensor:
    """``a`` itself when its array is C-contiguous, else a contiguous copy (gradient passes through)."""
    return a if a._device.backend.is_contiguous(a._data) else S.Contiguous.apply(a)


Tensor.contiguous = contiguous
Tensor.is_contiguous = lambda a: bool(a._device.backend.is_contiguous(a._data))
Tensor.view_as = Tensor.reshape_as = lambda a, other: reshape(a, other.shape)


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if a.ndim == 0:
        return reshape(a, 1)
    s, e = _dim(start_dim, a.ndim, "flatten"), _dim(end_dim, a.ndim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {tuple(a.shape)}")
    return reshape(a, *a.shape[:s], -1, *a.shape[e + 1:])


Tensor.flatten = flatten


def _dim(d: int, n: int, name: str) -> int:
    if not isinstance(d, (int, np.integer)):
        raise TypeError(f"{name}: dim must be an int, got {type(d).__name__}")
    if not -max(n, 1) <= d < max(n, 1):
        raise IndexError(f"{name}: dim {d} is out of range for a tensor with {n} dimensions")
    return int(d) % max(n, 1)


def permute(a: Tensor, *dims) -> Tensor:
    dims = _size_args(dims)
    if len(dims) != a.ndim or any(not -a.ndim <= d < a.ndim for d in dims) or \
            sorted(d % max(a.ndim, 1) for d in dims) != list(range(a.ndim)):
        raise ValueError(f"permute: dims {dims} are not a permutation of the {a.ndim} dims of shape {tuple(a.shape)}")
    return S.Permute.apply(a, tuple(d % a.ndim for d in dims))


def transpose(a: Tensor, dim0: int, dim1: int) -> Tensor:
    d0, d1 = _dim(dim0, a.ndim, "transpose"), _dim(dim1, a.ndim, "transpose")
    axes = list(range(a.ndim))
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return S.Permute.apply(a, tuple(axes))


Tensor.permute, Tensor.transpose = permute, transpose
Tensor.t = lambda a: transpose(a, 0, 1) if a.ndim == 2 else a


def expand(a: Tensor, *shape) -> Tensor:
    shape = _size_args(shape)
    lead = len(shape) - a.ndim
    if lead < 0:
        raise ValueError(f"expand: target shape {shape} has fewer dims than the tensor's {tuple(a.shape)}")
    full = tuple(a.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(shape))
    return S.Expand.apply(a, full)


Tensor.expand = expand
Tensor.expand_as = lambda a, other: expand(a, *other.shape)


def squeeze(a: Tensor, dim=None) -> Tensor:
    if dim is None:
        return reshape(a, *[s for s in a.shape if s != 1])
    d = _dim(dim, a.ndim, "squeeze")
    if a.shape[d] != 1:
        return a
    return reshape(a, *a.shape[:d], *a.shape[d + 1:])


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    d = _dim(dim, a.ndim + 1, "unsqueeze")
    return reshape(a, *a.shape[:d], 1, *a.shape[d:])


Tensor.squeeze, Tensor.unsqueeze = squeeze, unsqueeze


def _index_part(i, a: Tensor):
    if isinstance(i, Tensor):
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


def __getitem__(a: Tensor, idx) -> Tensor:
    idx = tuple(_index_part(i, a) for i in idx) if isinstance(idx, tuple) else _index_part(idx, a)
    return S.GetItem.apply(a, idx)


Tensor.__getitem__ = __getitem__


def split(a: Tensor, split_size, dim: int = 0):
    d = _dim(dim, a.ndim, "split")
    n = a.shape[d]
    if isinstance(split_size, int) and split_size <= 0:
        raise ValueError(f"split: split_size must be a positive int, got {split_size}")
    sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else []) \
        if isinstance(split_size, int) else list(split_size)
    if sum(sizes) != n:
        raise ValueError(f"split: sizes {sizes} do not add up to {n} (dim {d} of shape {tuple(a.shape)})")
    out, start = [], 0
    for s in sizes:
        sl = [slice(None)] * a.ndim
        sl[d] = slice(start, start + s)
        out.append(a[tuple(sl)])
        start += s
    return tuple(out)


def chunk(a: Tensor, chunks: int, dim: int = 0):
    n = a.shape[_dim(dim, a.ndim, "chunk")]
    if not isinstance(chunks, int) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    return split(a, max(1, -(-n // chunks)), dim)


Tensor.split, Tensor.chunk = split, chunk


def matmul(a: Tensor, b: Tensor) -> Tensor:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"matmul expects Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.dtype is not b.dtype:  # as PyTorch: no promotion inside matmul
        raise RuntimeError(f"matmul: expected both operands to have the same dtype, got {a.dtype} and {b.dtype}")
    return L.Matmul.apply(a, b)


Tensor.matmul = matmul

# ------------------------------------------------------------------ in place (bumps the version counter)


def _inplace(name, f):
    def op(a: Tensor, *args, **kwargs) -> Tensor:
        if a.requires_grad and a.is_leaf and _grad_on():
            raise RuntimeError(f"{name}: a leaf tensor that requires grad cannot be modified in place "
                               "(wrap it in `with mt.no_grad():`)")
        if a._node is not None and _grad_on():
            raise RuntimeError(f"{name}: in-place ops on tensors inside the graph are not supported; "
                               "use the out-of-place op")
        vals = [x._data if isinstance(x, Tensor) else x for x in args]
        try:
            f(a._data, *vals, **kwargs)
        except ValueError:
            raise ValueError(f"{name}: operand shapes {[tuple(getattr(v, 'shape', ())) for v in vals]} do "
                             f"not broadcast to the tensor's shape {tuple(a.shape)}") from None
        except TypeError:  # NumPy's casting refusal, e.g. an int64 tensor plus 0.5
            kinds = [str(v.dtype) if hasattr(v, "dtype") else type(v).__name__ for v in vals]
            if not all(hasattr(v, "dtype") or isinstance(v, _Number) for v in vals):
                raise TypeError(f"{name}: unsupported operand type(s) {kinds}") from None
            raise RuntimeError(f"{name}: the result with operand(s) {kinds} can't be stored in place in a "
                               f"tensor of dtype {a.dtype}; in-place ops keep the tensor's dtype") from None
        a._vc[0] += 1
        return a

    op.__name__ = name
    return op


def _grad_on() -> bool:
    from .autograd.grad_mode import STATE

    return STATE.enabled


def _set(x, v):
    x[...] = v


Tensor.add_ = _inplace("add_", lambda x, v, alpha=1: x.__iadd__(v * alpha if alpha != 1 else v))
Tensor.sub_ = _inplace("sub_", lambda x, v: x.__isub__(v))
Tensor.mul_ = _inplace("mul_", lambda x, v: x.__imul__(v))
Tensor.div_ = _inplace("div_", lambda x, v: x.__itruediv__(v))
Tensor.zero_ = _inplace("zero_", lambda x: _set(x, 0))
Tensor.fill_ = _inplace("fill_", _set)
Tensor.copy_ = _inplace("copy_", _set)
Tensor.clamp_ = _inplace("clamp_", lambda x, lo=None, hi=None: x.__setitem__(..., x.clip(lo, hi)))
