"""Tensor methods added for PyTorch programs: ``__index__``, item assignment, ``clone``,
``tril``/``triu``, ``narrow``, ``topk``/``sort``/``gather``, the remaining unary math,
``div(rounding_mode=)`` and ``//``. Each is a thin call of one op's ``Function.apply``."""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._tensor_methods import _Number, _dim, _index_part, _other, astype
from .autograd.grad_mode import STATE
from .ops import select as Sel
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
