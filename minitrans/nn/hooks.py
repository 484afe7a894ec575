"""Module hooks with PyTorch's names and semantics.

    h = layer.register_forward_pre_hook(lambda mod, args: ...)        # may replace the inputs
    h = layer.register_forward_hook(lambda mod, args, output: ...)    # may replace the output
    h = layer.register_full_backward_pre_hook(lambda mod, grad_output: ...)          # may replace grad_output
    h = layer.register_full_backward_hook(lambda mod, grad_input, grad_output: ...)  # may replace grad_input
    h.remove()                                                       # or: with h: ...

Order of one call (as in ``torch.nn.Module.__call__``): forward pre-hooks → the inputs are
wrapped for the backward hooks → ``forward`` → forward hooks → the outputs are wrapped.
Hooks of one kind run in registration order (``prepend=True`` puts one first); each sees
what the previous one returned.

Backward hooks. ``grad_input`` and ``grad_output`` are tuples with one entry per positional
argument of ``forward`` / per output (``None`` where that entry is not a tensor or needs no
gradient); keyword arguments are not part of ``grad_input``, as in PyTorch. To see every
gradient of a call at once, the tensors that need a gradient pass through one identity node
(``ops.hook_point.HookPoint``: several tensors are packed into one flat array, then unpacked
as views); its backward runs the hooks and hands on what they return. Where no input needs a
gradient, the backward hooks fire when the output gradients are known, with ``grad_input``
all ``None``.
"""
from __future__ import annotations

from collections import OrderedDict

from ..autograd.grad_mode import is_grad_enabled
from ..ops.hook_point import HookPoint
from ..tensor import Tensor

_KINDS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


class RemovableHandle:
    """Returned by every ``register_*_hook``: ``remove()`` takes the hook off (idempotent).

    Also a context manager: ``with module.register_forward_hook(h): ...`` removes it on exit."""

    _next_id = 0

    def __init__(self, hooks_dict: OrderedDict, *extra: dict) -> None:
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1
        self._dicts = (hooks_dict,) + extra

    def remove(self) -> None:
        for d in self._dicts:
            d.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def hook_dicts(module) -> dict:
    """The module's four hook tables, created on first registration (most modules never have hooks)."""
    d = module.__dict__.get("_hooks_tables")
    if d is None:
        d = {k: OrderedDict() for k in _KINDS}
        d["_with_kwargs"] = {}
        object.__setattr__(module, "_hooks_tables", d)
    return d


def register(module, kind: str, hook, prepend: bool = False, with_kwargs: bool = False) -> RemovableHandle:
    if not callable(hook):
        raise TypeError(f"register{kind[:-1]}: hook must be callable, got {type(hook).__name__}")
    tables = hook_dicts(module)
    table = tables[kind]
    handle = RemovableHandle(table, tables["_with_kwargs"])
    table[handle.id] = hook
    if prepend:
        table.move_to_end(handle.id, last=False)
    if with_kwargs:
        tables["_with_kwargs"][handle.id] = True
    return handle


# --------------------------------------------------------------------------- calling
def call(module, args: tuple, kwargs: dict):
    """``module(*args, **kwargs)`` with its hooks (see the module docstring for the order)."""
    tables = module.__dict__["_hooks_tables"]
    kw = tables["_with_kwargs"]
    for hid, hook in list(tables["_forward_pre_hooks"].items()):
        if hid in kw:
            res = hook(module, args, kwargs)
            if res is not None:
                if not (isinstance(res, tuple) and len(res) == 2):
                    raise RuntimeError("forward pre-hook registered with with_kwargs=True must return None or a "
                                       f"tuple (args, kwargs), got {type(res).__name__}")
                args, kwargs = res
                args = args if isinstance(args, tuple) else (args,)
        else:
            res = hook(module, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
    state = None
    if (tables["_backward_hooks"] or tables["_backward_pre_hooks"]) and is_grad_enabled():
        state = _BackwardState(module, tables)
        args = state.wrap_inputs(args)
    out = module.forward(*args, **kwargs)
    for hid, hook in list(tables["_forward_hooks"].items()):
        res = hook(module, args, kwargs, out) if hid in kw else hook(module, args, out)
        if res is not None:
            out = res
    if state is not None:
        out = state.wrap_outputs(out)
    return out


def _needs(x) -> bool:
    return isinstance(x, Tensor) and x.requires_grad


class _BackwardState:
    """What one call of a module with backward hooks keeps until its backward pass."""

    def __init__(self, module, tables) -> None:
        self.module, self.tables = module, tables
        self.n_inputs = 0
        self.input_index: list[int] = []
        self.grad_output = None

    def wrap_inputs(self, args: tuple) -> tuple:
        self.n_inputs = len(args)
        self.input_index = [i for i, a in enumerate(args) if _needs(a)]
        if not self.input_index:
            return args
        wrapped = _pass_through([args[i] for i in self.input_index], self, "input")
        args = list(args)
        for i, w in zip(self.input_index, wrapped):
            args[i] = w
        return tuple(args)

    def wrap_outputs(self, out):
        single = isinstance(out, Tensor)
        items = [out] if single else (list(out) if isinstance(out, (tuple, list)) else None)
        if items is None:
            return out                   # e.g. a dict: no gradients to hook, as PyTorch
        self.n_outputs = len(items)
        self.output_index = [i for i, o in enumerate(items) if _needs(o)]
        if not self.output_index:
            return out
        wrapped = _pass_through([items[i] for i in self.output_index], self, "output")
        for i, w in zip(self.output_index, wrapped):
            items[i] = w
        if single:
            return items[0]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)   # a namedtuple takes fields

    # ------------------------------------------------------------ backward side
    def on_grad_output(self, grads: list) -> list:
        grad_output = _with_none(self.output_index, grads, self.n_outputs)
        for hook in list(self.tables["_backward_pre_hooks"].values()):
            res = hook(self.module, grad_output)
            if res is not None:
                grad_output = _check_result(res, grad_output, "Backward pre hook", "grad_output")
        self.grad_output = grad_output
        if not self.input_index:
            grad_input = (None,) * self.n_inputs
            for hook in list(self.tables["_backward_hooks"].values()):
                res = hook(self.module, grad_input, grad_output)
                if res is not None and not (isinstance(res, tuple) and all(r is None for r in res)):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should always "
                                       "return None or None for all gradients.")
        return [grad_output[i] for i in self.output_index]

    def on_grad_input(self, grads: list) -> list:
        grad_input = _with_none(self.input_index, grads, self.n_inputs)
        grad_output = self.grad_output if self.grad_output is not None else (None,) * getattr(self, "n_outputs", 0)
        for hook in list(self.tables["_backward_hooks"].values()):
            res = hook(self.module, grad_input, grad_output)
            if res is not None:
                grad_input = _check_result(res, grad_input, "Backward hook", "grad_input")
        return [grad_input[i] for i in self.input_index]


def _with_none(index, grads, n) -> tuple:
    out = [None] * n
    for i, g in zip(index, grads):
        out[i] = g
    return tuple(out)


def _check_result(res, old: tuple, who: str, what: str) -> tuple:
    if not isinstance(res, (tuple, list)):
        raise TypeError(f"{who} must return None or a tuple with one entry per {what} entry ({len(old)}), "
                        f"got {type(res).__name__}")
    if len(res) != len(old):
        raise RuntimeError(f"{who} returned an invalid number of {what}, got {len(res)}, but expected {len(old)}")
    for k, (r, o) in enumerate(zip(res, old)):
        if r is None:
            continue
        if not isinstance(r, Tensor):
            raise TypeError(f"{who}: {what}[{k}] must be a Tensor or None, got {type(r).__name__}")
        if o is not None and tuple(r.shape) != tuple(o.shape):
            raise RuntimeError(f"{who} changed the shape of {what}[{k}] from {tuple(o.shape)} to {tuple(r.shape)}")
    return tuple(res)


def _pass_through(tensors: list, state: _BackwardState, side: str) -> list:
    dts = {t._data.dtype for t in tensors}
    if len(dts) > 1:
        raise NotImplementedError(f"{type(state.module).__name__}: backward hooks need the {side}s that require grad "
                                  f"to share one dtype, got {sorted(str(d) for d in dts)}")
    on_backward = state.on_grad_output if side == "output" else state.on_grad_input
    packed = HookPoint.apply(*tensors, on_backward=on_backward, device=tensors[0]._device)
    if len(tensors) == 1:
        return [packed]
    out, off = [], 0
    for t in tensors:
        n = t.numel()
        out.append(packed[off:off + n].reshape(*t.shape))
        off += n
    return out
