"""Tensor methods that write into the tensor's own storage: ``add_`` ... ``clamp_``, ``masked_fill_``
and item assignment. Each bumps the version counter, so a graph that saved the old values refuses to
run backward through them."""
from __future__ import annotations

import numpy as np

from . import _dtype
from ._tensor_arith import Number, as_operand, astype
from ._tensor_core import TensorBase
from ._tensor_shape import index_key
from .autograd.grad_mode import STATE
from .ops import select as select_ops
from .ops.shape import describe_index


def _write_into(x, value) -> None:
    x[...] = value


def _add_into(x, value, alpha=1) -> None:
    x += value * alpha if alpha != 1 else value


def _sub_into(x, value) -> None:
    x -= value


def _mul_into(x, value) -> None:
    x *= value


def _div_into(x, value) -> None:
    x /= value


def _in_place(name, write, backend_op: bool = False):
    """A method running ``write(array, *values)`` on the tensor's array (``write(backend, array,
    *values)`` when ``backend_op``), refused where it would corrupt a recorded graph."""
    def op(a: TensorBase, *args, **kwargs) -> TensorBase:
        if a.requires_grad and a.is_leaf and STATE.enabled:
            raise RuntimeError(f"{name}: a leaf tensor that requires grad cannot be modified in place "
                               "(wrap it in `with mt.no_grad():`)")
        if a._node is not None and STATE.enabled:
            raise RuntimeError(f"{name}: in-place ops on tensors inside the graph are not supported; "
                               "use the out-of-place op")
        values = [x._data if isinstance(x, TensorBase) else x for x in args]
        try:
            if backend_op:
                write(a._device.backend, a._data, *values, **kwargs)
            else:
                write(a._data, *values, **kwargs)
        except ValueError:
            raise ValueError(f"{name}: operand shapes {[tuple(getattr(v, 'shape', ())) for v in values]} do "
                             f"not broadcast to the tensor's shape {tuple(a.shape)}") from None
        except TypeError:  # NumPy's casting refusal, e.g. an int64 tensor plus 0.5
            kinds = [str(v.dtype) if hasattr(v, "dtype") else type(v).__name__ for v in values]
            if not all(hasattr(v, "dtype") or isinstance(v, Number) for v in values):
                raise TypeError(f"{name}: unsupported operand type(s) {kinds}") from None
            raise RuntimeError(f"{name}: the result with operand(s) {kinds} can't be stored in place in a "
                               f"tensor of dtype {a.dtype}; in-place ops keep the tensor's dtype") from None
        a._version_counter[0] += 1
        return a

    op.__name__ = name
    return op


def _clamp_into(backend, x, min=None, max=None) -> None:  # noqa: A002  (PyTorch's argument names)
    backend.clip(x, min, max, out=x)


def _clamp_(self, min=None, max=None):  # noqa: A002  (PyTorch's argument names)
    """In place: ``self`` limited to [min, max] (either bound may be None, not both)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")   # the same words as clamp
    return _clamp_checked(self, min, max)


_clamp_checked = _in_place("clamp_", _clamp_into, backend_op=True)
_clamp_.__name__ = "clamp_"


def _value_array(a: TensorBase, value):
    """The raw array (or number) to write into ``a``: numbers as they are, arrays cast to ``a``'s dtype."""
    if isinstance(value, TensorBase):
        if value.device != a.device:
            raise RuntimeError(f"setitem: the value is on {value.device} but the tensor is on {a.device}")
        return value._data if value._data.dtype == a._data.dtype else value._data.astype(a._data.dtype)
    if not isinstance(value, (Number, list, tuple, np.ndarray)):
        raise TypeError(f"setitem: cannot assign a {type(value).__name__} to a tensor")
    value = as_operand(a, value)
    if isinstance(value, TensorBase):  # a list or an ndarray
        return value._data.astype(a._data.dtype, copy=False)
    if isinstance(value, complex):
        raise TypeError("setitem: complex values are not supported")
    return value


class InPlaceMixin:
    """In-place methods of ``Tensor``."""

    __slots__ = ()

    add_ = _in_place("add_", _add_into)
    sub_ = _in_place("sub_", _sub_into)
    mul_ = _in_place("mul_", _mul_into)
    div_ = _in_place("div_", _div_into)
    zero_ = _in_place("zero_", lambda x: _write_into(x, 0))
    fill_ = _in_place("fill_", _write_into)
    copy_ = _in_place("copy_", _write_into)
    clamp_ = _clamp_

    def masked_fill_(self, mask: TensorBase, value) -> TensorBase:
        """In place: ``value`` wherever the (broadcast) bool mask is True."""
        if not isinstance(mask, TensorBase) or mask.dtype is not _dtype.bool_:
            raise TypeError("masked_fill_: mask must be a bool Tensor")
        full = mask.expand(*self.shape) if tuple(mask.shape) != tuple(self.shape) else mask
        self[full] = value.item() if isinstance(value, TensorBase) else value
        return self

    def __setitem__(self, idx, value) -> None:
        """``self[idx] = value`` in place, as in PyTorch: the version counter goes up (so a graph that
        saved ``self`` refuses to backward through the old values), and when gradients are on the
        assignment joins the graph: ``self`` gets the gradient outside ``idx``, ``value`` the one inside."""
        a = self
        idx = index_key(a, idx)
        value_requires_grad = isinstance(value, TensorBase) and value.requires_grad
        if not (STATE.enabled and (a.requires_grad or value_requires_grad)):
            try:
                a._data[idx] = _value_array(a, value)
            except IndexError as e:
                raise IndexError(f"index {describe_index(idx)} is invalid for a tensor of shape "
                                 f"{tuple(a.shape)}: {e}") from None
            except ValueError:  # PyTorch's error type for a shape that does not broadcast
                raise RuntimeError(f"setitem: a value of shape {tuple(getattr(value, 'shape', ()))} cannot be "
                                   f"assigned to index {describe_index(idx)} of a tensor of shape "
                                   f"{tuple(a.shape)}") from None
            a._version_counter[0] += 1
            return
        if a.requires_grad and a.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation "
                               "(item assignment); wrap it in `with mt.no_grad():` or assign into a clone()")
        if not a.dtype.is_floating_point:
            raise RuntimeError(f"setitem: cannot write a value that requires grad into a tensor of dtype {a.dtype}")
        if getattr(a, "_is_view", False):
            # PyTorch would rewrite the history of the tensor this one is a view of; minitrans
            # cannot reach that tensor, and writing through would leave its gradient wrong
            raise RuntimeError("setitem: assigning into a view while gradients are recorded is not supported "
                               f"(the tensor of shape {tuple(a.shape)} shares storage with another); "
                               "clone() it first")
        if isinstance(value, TensorBase):
            if value.device != a.device:
                raise RuntimeError(f"setitem: the value is on {value.device} but the tensor is on {a.device}")
            v = astype(value, a.dtype)
        else:
            v = _value_array(a, value)
        node = select_ops.SetItem.apply(a, v, idx)._node
        a._node, a.requires_grad = node, True
        a._version_counter[0] += 1
