"""Tensor: an array, its device and dtype, its gradient, and the graph node that made it.

Ops are attached in ``minitrans/_tensor_methods.py`` (each a one-line call of a
``Function.apply``); this file holds the state and the non-differentiable parts.
"""
from __future__ import annotations

import numpy as np

from . import _dtype
from .device import CPU, as_device, device


class Tensor:
    """An n-dimensional array that records the ops applied to it for reverse-mode autograd."""

    __slots__ = ("_data", "_device", "requires_grad", "grad", "_node", "_vc", "_hooks", "__weakref__")
    __array_priority__ = 1000  # so that ndarray <op> Tensor defers to Tensor's reflected op

    def __init__(self, data, dtype=None, device=None, requires_grad: bool = False) -> None:
        t = tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        self._data, self._device = t._data, t._device
        self.requires_grad, self.grad, self._node, self._vc, self._hooks = t.requires_grad, None, None, [0], None

    @staticmethod
    def _wrap(arr, dev: device = CPU, requires_grad: bool = False, node=None) -> "Tensor":
        t = Tensor.__new__(Tensor)
        t._data = arr
        t._device = dev
        t.requires_grad = requires_grad
        t.grad = None
        t._node = node
        t._vc = [0]
        t._hooks = None
        return t

    # ----------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple:
        return self._data.shape

    def size(self, dim: int | None = None):
        return self._data.shape if dim is None else self._data.shape[dim]

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return int(np.prod(self._data.shape, dtype=np.int64))

    @property
    def dtype(self) -> _dtype.dtype:
        return _dtype._FROM_NP[self._data.dtype]

    @property
    def device(self) -> device:
        return self._device

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def _version(self) -> int:
        """How many in-place changes this tensor's storage has seen (shared with its views)."""
        return self._vc[0]

    @property
    def grad_fn(self):
        return self._node

    @property
    def data(self) -> "Tensor":
        """A tensor sharing this one's storage and version counter, outside the graph."""
        return self.detach()

    @data.setter
    def data(self, value: "Tensor") -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"data must be a Tensor, got {type(value).__name__}")
        self._data, self._device = value._data, value._device

    @property
    def T(self) -> "Tensor":
        return self.permute(*range(self.ndim - 1, -1, -1))

    @property
    def mT(self) -> "Tensor":
        return self.transpose(-2, -1)

    # ----------------------------------------------------------------- conversion
    def numpy(self) -> np.ndarray:
        return self._device.backend.to_numpy(self._data)

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        if self.numel() != 1:
            raise RuntimeError(f"item(): a Tensor with {self.numel()} elements cannot be converted to a scalar")
        return self.numpy().reshape(()).item()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self.numel()} elements is ambiguous")
        return bool(self.item())

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def detach(self) -> "Tensor":
        # shares the version counter (as PyTorch): an in-place change through the detached
        # tensor is seen by any graph that saved this one
        t = Tensor._wrap(self._data, self._device)
        t._vc = self._vc
        return t

    def detach_(self) -> "Tensor":
        self._node, self.requires_grad = None, False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and not self.dtype.is_floating_point:
            raise RuntimeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        if not requires_grad and self._node is not None:
            raise RuntimeError("requires_grad_(False) is only allowed on leaf tensors; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        if self._node is not None:
            import weakref

            self._node._retain = weakref.ref(self)

    def register_hook(self, hook):
        """``hook(grad) -> Tensor | None`` runs when this tensor's gradient is computed; a return value replaces it."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._node is not None:
            hooks = self._node._hooks
            if hooks is None:
                hooks = self._node._hooks = []
        else:
            hooks = self._hooks
            if hooks is None:
                hooks = self._hooks = []
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """``hook(tensor) -> None`` runs on a leaf right after backward has updated its ``.grad``."""
        if not self.requires_grad or self._node is not None:
            raise RuntimeError("post accumulate grad hooks can only be registered on leaf tensors that "
                               "require grad")
        from .autograd.engine import register_post_accumulate_grad_hook

        return _HookHandle(register_post_accumulate_grad_hook(self, hook), hook)

    def backward(self, gradient: "Tensor | None" = None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs=None) -> None:
        """PyTorch's signature; ``create_graph`` and ``inputs`` raise a clear NotImplementedError."""
        if create_graph or inputs is not None:
            from . import autograd

            autograd.backward(self, gradient, retain_graph, create_graph, inputs)
            return
        from .autograd.engine import backward

        backward(self, gradient, bool(retain_graph))

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
            out = out.astype(dt)
        if dev is not None:
            from .ops.shape import ToDevice

            dev = as_device(dev)
            if dev != out._device:
                out = ToDevice.apply(out, dev)
        return out

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    def float(self) -> "Tensor":
        return self.astype(_dtype.float32)

    def double(self) -> "Tensor":
        return self.astype(_dtype.float64)

    def long(self) -> "Tensor":
        return self.astype(_dtype.int64)

    def bool(self) -> "Tensor":
        return self.astype(_dtype.bool_)

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=200, edgeitems=3,
                               prefix="tensor(")
        extras = []
        if self._device.type != "cpu":
            extras.append(f"device='{self._device}'")
        if self.dtype is not _dtype.float32 and self.dtype is not _dtype.int64 and self.dtype is not _dtype.bool_:
            extras.append(f"dtype={self.dtype}")
        if self._node is not None:
            extras.append(f"grad_fn=<{type(self._node).__name__}Backward>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __hash__(self) -> int:
        return id(self)

    def __getstate__(self):
        return {"data": self.numpy(), "requires_grad": self.requires_grad}

    def __setstate__(self, state):
        self._data, self._device = state["data"], CPU
        self.requires_grad, self.grad, self._node, self._vc, self._hooks = state["requires_grad"], None, None, [0], None


class _HookHandle:
    def __init__(self, hooks: list, hook) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


# --------------------------------------------------------------------------- creation
def _check_requires_grad(arr, requires_grad: bool) -> None:
    if requires_grad and arr.dtype.kind != "f":
        raise RuntimeError(
            f"only floating-point tensors can require gradients, got dtype {_dtype.from_numpy_dtype(arr.dtype)}")


def _finish(arr: np.ndarray, dtype, device, requires_grad: bool) -> Tensor:
    """Cast a host array to ``dtype``, move it to ``device`` and wrap it."""
    if dtype is not None:
        arr = arr.astype(_dtype.as_dtype(dtype).np, copy=False)
    else:
        arr = arr.astype(_dtype.from_numpy_dtype(arr.dtype).np, copy=False)
    _check_requires_grad(arr, requires_grad)
    dev = as_device(device)
    data = arr if dev.type == "cpu" else dev.backend.from_numpy(arr)
    return Tensor._wrap(data, dev, bool(requires_grad))


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested lists, scalars, NumPy arrays or a Tensor)."""
    if isinstance(data, Tensor):
        arr = np.array(data.numpy())
    elif isinstance(data, np.ndarray):
        arr = np.array(data)
    else:
        try:
            arr = np.array(data)
        except ValueError as e:
            raise ValueError(f"tensor(): could not build an array from the data given ({e})") from None
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)  # Python floats become the default dtype, as in PyTorch
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"tensor(): unsupported data of NumPy dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.dtype not in (np.float32, np.float64) and dtype is None:
        arr = arr.astype(np.float32)
    return _finish(arr, dtype, device, requires_grad)


def from_numpy(arr: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with ``arr`` (float32, float64, int64 or bool)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy expects an np.ndarray, got {type(arr).__name__}")
    _dtype.as_dtype(arr.dtype)
    return Tensor._wrap(arr, CPU)


def _shape_arg(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"sizes must be non-negative integers, got {tuple(size)}")
    return tuple(int(s) for s in size)


def _dt(dtype) -> np.dtype:
    return (_dtype.float32 if dtype is None else _dtype.as_dtype(dtype)).np


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.zeros(_shape_arg(size), _dt(dtype)), None, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.ones(_shape_arg(size), _dt(dtype)), None, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    if isinstance(fill_value, Tensor) and fill_value.numel() == 1:
        fill_value = fill_value.item()
    if not isinstance(fill_value, (bool, int, float, np.bool_, np.integer, np.floating)):
        raise TypeError(f"full: fill_value must be a number or bool, got {type(fill_value).__name__}")
    if dtype is None:
        dtype = _dtype.bool_ if isinstance(fill_value, bool) else (
            _dtype.int64 if isinstance(fill_value, (int, np.integer)) else _dtype.float32)
    return _finish(np.full(_shape_arg((size,) if isinstance(size, int) else (tuple(size),)), fill_value,
                           _dtype.as_dtype(dtype).np), None, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    arr = np.arange(start, end, step)
    if dtype is None:
        dtype = _dtype.int64 if arr.dtype.kind in "iu" else _dtype.float32
    return _finish(arr, dtype, device, requires_grad)


def linspace(start, end, steps: int, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.linspace(start, end, steps), dtype or _dtype.float32, device, requires_grad)


def zeros_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return zeros(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return ones(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def empty_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return zeros_like(t, dtype, device, requires_grad)
