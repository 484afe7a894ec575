"""``Module`` and ``Parameter``: the PyTorch-style container for layers and their weights."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from .. import _dtype
from ..device import as_device
from ..ops.shape import ToDevice
from ..tensor import Tensor
from . import hooks as _hooks


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable weight (``requires_grad=True`` by default)."""

    __slots__ = ()

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            data = Tensor._wrap(np.zeros(0, np.float32))
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter expects a Tensor, got {type(data).__name__}")
        p = Tensor.__new__(cls)
        p._data, p._device, p.grad, p._node = data._data, data._device, None, None
        p._version_counter, p._hooks = [0], None
        p.requires_grad = False
        if requires_grad:
            p.requires_grad_(True)
        return p

    def __init__(self, data=None, requires_grad: bool = True) -> None:
        pass

    def __repr__(self) -> str:
        return "Parameter containing:\n" + Tensor.__repr__(self)

    def __reduce_ex__(self, protocol):
        return (Parameter, (Tensor._wrap(self.numpy()), self.requires_grad))


class Module:
    """Base class of every layer: holds parameters, buffers and submodules in registration order."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------ registration
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called")
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str):
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if key in d and name in d[key]:
                return d[key][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for d in (self._parameters, self._buffers, self._modules):
            if name in d:
                del d[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that moves with the module and is saved in its state dict, but is not learned."""
        self._buffers[name] = tensor
        if not persistent:
            self.__dict__.setdefault("_non_persistent", set()).add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._parameters[name] = param

    def add_module(self, name: str, module: "Module | None") -> None:
        self._modules[name] = module

    # ------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        if "_hooks_tables" not in self.__dict__:
            return self.forward(*args, **kwargs)
        return _hooks.call(self, args, kwargs)

    # ------------------------------------------------------------ hooks (see minitrans/nn/hooks.py)
    def register_forward_pre_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False):
        """``hook(module, args)`` (or ``(module, args, kwargs)``) before ``forward``; a return value replaces the inputs."""
        return _hooks.register(self, "_forward_pre_hooks", hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False):
        """``hook(module, args, output)`` (or ``(module, args, kwargs, output)``) after ``forward``; a return value replaces the output."""
        return _hooks.register(self, "_forward_hooks", hook, prepend, with_kwargs)

    def register_full_backward_pre_hook(self, hook, prepend: bool = False):
        """``hook(module, grad_output)`` when the output gradients are known; a returned tuple replaces them."""
        return _hooks.register(self, "_backward_pre_hooks", hook, prepend)

    def register_full_backward_hook(self, hook, prepend: bool = False):
        """``hook(module, grad_input, grad_output)`` when the input gradients are known; a returned tuple replaces grad_input."""
        return _hooks.register(self, "_backward_hooks", hook, prepend)

    # ------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "", memo=None) -> Iterator[tuple[str, "Module"]]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mp, m in mods:
            for name, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mp}.{name}" if mp else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        for mp, m in self.named_modules(prefix):
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mp}.{name}" if mp else name), b

    def buffers(self) -> Iterator[Tensor]:
        for _, b in self.named_buffers():
            yield b

    def apply(self, fn) -> "Module":
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ modes and devices
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = Tensor._wrap(p.grad._data * 0, p.device)

    def to(self, *args, **kwargs) -> "Module":
        """Move (or cast) every parameter and buffer in place; Parameter objects keep their identity."""
        dev = kwargs.get("device")
        dt = kwargs.get("dtype")
        for a in args:
            if isinstance(a, _dtype.dtype) or (isinstance(a, str) and a in _dtype._NAMES):
                dt = a
            else:
                dev = a
        for m in self.modules():
            for d in (m._parameters, m._buffers):
                for k, t in d.items():
                    if t is None:
                        continue
                    moved = t.detach()
                    if dt is not None and t.dtype.is_floating_point:
                        moved = moved.astype(dt)
                    if dev is not None and as_device(dev) != moved.device:
                        moved = ToDevice.apply(moved, as_device(dev))
                    t._data, t._device = moved._data, moved._device
                    if t.grad is not None:
                        t.grad = None
        return self

    def cuda(self) -> "Module":
        return self.to("cuda")

    def cpu(self) -> "Module":
        return self.to("cpu")

    def double(self) -> "Module":
        return self.to(dtype="float64")

    def float(self) -> "Module":
        return self.to(dtype="float32")

    # ------------------------------------------------------------ state
    def state_dict(self, prefix: str = "") -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers by dotted name, detached (they share storage)."""
        out = OrderedDict()
        for mp, m in self.named_modules(prefix.rstrip(".")):
            skip = m.__dict__.get("_non_persistent", set())
            for d in (m._parameters, m._buffers):
                for name, t in d.items():
                    if t is not None and name not in skip:
                        out[f"{mp}.{name}" if mp else name] = t.detach()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values into the existing parameters; raise on missing/unexpected keys (strict) or shape mismatch."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and (missing or unexpected):
            if missing:
                errors.append("Missing key(s) in state_dict: " + ", ".join(repr(k) for k in missing))
            if unexpected:
                errors.append("Unexpected key(s) in state_dict: " + ", ".join(repr(k) for k in unexpected))
        for k, t in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            arr = v.numpy() if isinstance(v, Tensor) else np.asarray(v)
            if tuple(arr.shape) != tuple(t.shape):
                errors.append(f"size mismatch for {k!r}: copying a param with shape {tuple(arr.shape)} from "
                              f"checkpoint, the shape in current model is {tuple(t.shape)}")
            elif arr.dtype != t._data.dtype:
                # strict on purpose (PyTorch casts): a float64 checkpoint silently rounded into a float32
                # model is lost precision; convert the model first (.double()/.float()) to load it
                errors.append(f"dtype mismatch for {k!r}: checkpoint has {arr.dtype}, model has {t._data.dtype}")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        targets = dict(self._named_tensors())
        for k in own:
            if k in state_dict:
                v = state_dict[k]
                arr = (v.numpy() if isinstance(v, Tensor) else np.asarray(v)).astype(own[k]._data.dtype)
                t = targets[k]
                t._data = t.device.backend.from_numpy(arr, copy=True)
                t._version_counter[0] += 1
        return _IncompatibleKeys(missing, unexpected)

    def _named_tensors(self):
        for mp, m in self.named_modules():
            for d in (m._parameters, m._buffers):
                for name, t in d.items():
                    if t is not None:
                        yield (f"{mp}.{name}" if mp else name), t

    # ------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {sub}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"


class _IncompatibleKeys(tuple):
    def __new__(cls, missing, unexpected):
        t = super().__new__(cls, (missing, unexpected))
        t.missing_keys, t.unexpected_keys = missing, unexpected
        return t
