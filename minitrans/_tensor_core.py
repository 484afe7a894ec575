"""The state every tensor has, and the parts of its API that need no op.

``TensorBase`` holds an array of the device's backend, the device, the autograd fields
(``requires_grad``, ``grad``, the graph node that made it, its version counter and hooks) and
answers questions about them (shape, dtype, item, repr ...). It sits below the autograd
``Function``: ``Function.apply`` builds its outputs with :meth:`TensorBase._wrap`, which makes
an instance of the one concrete subclass, ``minitrans.Tensor``. That class (``tensor.py``) adds
the ops from the method mixins and registers itself here when it is defined, so this module
never imports the layers above it.
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from . import _dtype
from .device import CPU, device

_TENSOR_CLASS = None        # the concrete tensor class, set by TensorBase.__init_subclass__


class TensorBase:
    """An n-dimensional array that records the ops applied to it for reverse-mode autograd.

    ``_is_view`` is set only on tensors made by a view op whose array shares its input's storage;
    it is left unset (read with ``getattr(t, "_is_view", False)``) everywhere else, so making a
    tensor costs nothing for it.
    """

    __slots__ = ("_data", "_device", "requires_grad", "grad", "_node", "_version_counter", "_hooks", "_is_view",
                 "__weakref__")
    __array_priority__ = 1000  # so that ndarray <op> Tensor defers to Tensor's reflected op

    def __init_subclass__(cls, **kwargs):
        # the class built directly on TensorBase is the one ops make; its own subclasses
        # (nn.Parameter) are made by their constructors only
        global _TENSOR_CLASS
        super().__init_subclass__(**kwargs)
        if TensorBase not in cls.__bases__:
            return
        if _TENSOR_CLASS is not None:
            raise TypeError(f"{cls.__name__}: minitrans has one tensor class built on TensorBase, "
                            f"{_TENSOR_CLASS.__name__}")
        _TENSOR_CLASS = cls

    @staticmethod
    def _wrap(arr, dev: device = CPU, requires_grad: bool = False, node=None) -> "TensorBase":
        """A tensor around the backend array ``arr`` (no copy), with a fresh version counter."""
        t = _TENSOR_CLASS.__new__(_TENSOR_CLASS)
        t._data = arr
        t._device = dev
        t.requires_grad = requires_grad
        t.grad = None
        t._node = node
        t._version_counter = [0]
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
        return math.prod(self._data.shape)     # a Python int, ~10x faster than np.prod (item() calls it)

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
        return self._version_counter[0]

    @property
    def grad_fn(self):
        return self._node

    @property
    def data(self) -> "TensorBase":
        """A tensor sharing this one's storage and version counter, outside the graph."""
        return self.detach()

    @data.setter
    def data(self, value: "TensorBase") -> None:
        if not isinstance(value, TensorBase):
            raise TypeError(f"data must be a Tensor, got {type(value).__name__}")
        self._data, self._device = value._data, value._device

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

    def __index__(self) -> int:
        """A one-element integer tensor used where Python wants an int: ``seq[i]``, ``x[i:i + n]``, ``range(n)``."""
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError(f"only integer tensors of a single element can be converted to an index "
                            f"(got dtype {self.dtype}, shape {tuple(self.shape)})")
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

    # ----------------------------------------------------------------- graph membership
    def detach(self) -> "TensorBase":
        """This tensor's storage outside the graph. It shares the version counter (as in PyTorch):
        an in-place change through the detached tensor is seen by any graph that saved this one."""
        t = TensorBase._wrap(self._data, self._device)
        t._version_counter = self._version_counter
        if getattr(self, "_is_view", False):
            t._is_view = True
        return t

    def detach_(self) -> "TensorBase":
        self._node, self.requires_grad = None, False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "TensorBase":
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
            self._node._retain = weakref.ref(self)

    def register_hook(self, hook):
        """``hook(grad) -> Tensor | None`` runs when this tensor's gradient is computed; a return value replaces it."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        owner = self._node if self._node is not None else self
        hooks = owner._hooks
        if hooks is None:
            hooks = owner._hooks = []
        hooks.append(hook)
        return HookHandle(hooks, hook)

    # ----------------------------------------------------------------- printing and pickling
    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=200, edgeitems=3,
                               prefix="tensor(")
        extras = []
        if self._device != CPU:               # as PyTorch: the default device goes unnamed
            extras.append(f"device='{self._device}'")
        if self.dtype is not _dtype.float32 and self.dtype is not _dtype.int64 and self.dtype is not _dtype.bool_:
            extras.append(f"dtype={self.dtype}")
        if self._node is not None:
            extras.append(f"grad_fn=<{type(self._node).__name__}Backward>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __getstate__(self):
        return {"data": self.numpy(), "requires_grad": self.requires_grad}

    def __setstate__(self, state):
        self._data, self._device = state["data"], CPU
        self.requires_grad, self.grad, self._node = state["requires_grad"], None, None
        self._version_counter, self._hooks = [0], None


class HookHandle:
    """What ``register_hook`` returns: ``remove()`` takes the hook out again."""

    def __init__(self, hooks: list, hook) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)
