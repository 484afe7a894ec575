"""The backward engine: one iterative reverse-topological walk over the recorded graph.

Gradients are summed per node before its ``backward`` runs, reduced to each input's
shape here (so ops never undo broadcasting themselves), and accumulated into leaves'
``.grad`` at the end. Saved arrays are freed after use unless ``retain_graph=True``.

A leaf can have a gradient buffer (``set_grad_buffer``; the optimizers register their
parameters' slices of a flat buffer): its gradient is then written into that buffer — one
copy, as for any leaf, but into memory the optimizer updates with one launch — and later
backward passes accumulate into it in place. Without a buffer a leaf's first gradient is a
private copy and accumulation makes a new array.
"""
from __future__ import annotations

import weakref

from ..tensor import Tensor
from .function import Function
from .grad_mode import STATE, no_grad


def _as_grad_array(t: Tensor, gradient):
    xp = t._device.backend
    if gradient is None:
        if t.numel() != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for scalar outputs; this tensor has shape {tuple(t.shape)}: "
                "call backward(gradient) with a gradient of the same shape")
        return xp.ones(t.shape, t._data.dtype)
    if isinstance(gradient, Tensor):
        if gradient._device != t._device:
            raise RuntimeError(f"backward: gradient is on {gradient._device} but the tensor is on {t._device}")
        g = gradient._data
    else:
        g = xp.asarray(gradient)
    if tuple(g.shape) != tuple(t.shape):
        raise RuntimeError(f"backward: gradient has shape {tuple(g.shape)} but the tensor has shape {tuple(t.shape)}")
    return g.astype(t._data.dtype, copy=False)


def _run_hooks(hooks, g, dev):
    for h in hooks:
        r = h(Tensor._wrap(g, dev))
        if r is not None:
            g = r._data if isinstance(r, Tensor) else r
    return g


def backward(tensor: Tensor, gradient=None, retain_graph: bool = False) -> None:
    """Accumulate d(tensor)/d(leaf) · gradient into every leaf's ``.grad``."""
    if not tensor.requires_grad:
        raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
    g0 = _as_grad_array(tensor, gradient)
    dev = tensor._device
    with no_grad():
        if tensor._node is None:
            _accumulate({id(tensor): (tensor, g0)}, dev)
            return
        root = tensor._node
        deps = {root: 0}
        stack = [root]
        while stack:
            n = stack.pop()
            for p in n.parents:
                if p is not None and isinstance(p, Function):
                    c = deps.get(p)
                    if c is None:
                        deps[p] = 1
                        stack.append(p)
                    else:
                        deps[p] = c + 1
        grads = {root: g0}
        leaves: dict = {}
        ready = [root]
        anomaly = STATE.anomaly
        while ready:
            n = ready.pop()
            g = grads.pop(n)
            if n._hooks:
                g = _run_hooks(n._hooks, g, dev)
            if n._retain is not None:
                t = n._retain()
                if t is not None:
                    t.grad = Tensor._wrap(g if t.grad is None else t.grad._data + g, dev)
            if n._freed:
                raise RuntimeError(
                    f"Trying to backward through the graph a second time (at {type(n).__name__}), but the saved "
                    "arrays were already freed. Specify retain_graph=True on the first backward() call.")
            if n._versions:
                for vc, v in n._versions:
                    if vc[0] != v:
                        raise RuntimeError(
                            f"one of the tensors needed for gradient computation by {type(n).__name__} has been "
                            f"modified by an in-place operation: it is at version {vc[0]}, expected version {v}")
            gin = type(n).backward(n, g)
            if not isinstance(gin, tuple):
                gin = (gin,)
            if len(gin) != len(n.parents):
                raise RuntimeError(f"{type(n).__name__}.backward returned {len(gin)} gradients, "
                                   f"expected {len(n.parents)} (one per input)")
            if anomaly:
                from .anomaly import check_backward

                check_backward(n, gin)
            if not retain_graph:
                n.saved = ()
                n._freed = True
                n.__dict__.clear()
            for p, gi, shape, dt in zip(n.parents, gin, n.shapes, n.dtypes):
                if p is None or gi is None:
                    continue
                if gi.shape != shape:
                    gi = _reduce(n, gi, shape)
                if gi.dtype != dt:
                    gi = gi.astype(dt)
                if isinstance(p, Function):
                    prev = grads.get(p)
                    grads[p] = gi if prev is None else prev + gi
                    c = deps[p] - 1
                    deps[p] = c
                    if c == 0:
                        ready.append(p)
                else:
                    k = id(p)
                    prev = leaves.get(k)
                    leaves[k] = (p, gi if prev is None else prev[1] + gi)
        _accumulate(leaves, dev)


def _reduce(n: Function, gi, shape):
    try:
        return n.xp.sum_to(gi, shape)
    except ValueError:
        raise RuntimeError(f"{type(n).__name__}.backward returned a gradient of shape {tuple(gi.shape)}, "
                           f"which does not broadcast to its input's shape {tuple(shape)}") from None


_GRAD_BUFFERS: dict = {}  # id(leaf) -> (weakref to the leaf, array its gradient is written into)


def set_grad_buffer(t: Tensor, buf) -> None:
    """Write ``t``'s future gradients into ``buf`` (an array of ``t``'s shape, dtype and device)."""
    key = id(t)
    old = _GRAD_BUFFERS.get(key)
    if old is not None and old[0]() is t and old[1] is buf:
        return
    _GRAD_BUFFERS[key] = (weakref.ref(t, lambda _r, k=key: _GRAD_BUFFERS.pop(k, None)), buf)


def _grad_buffer(t: Tensor, g):
    e = _GRAD_BUFFERS.get(id(t))
    if e is None or e[0]() is not t:
        return None
    buf = e[1]
    if tuple(buf.shape) != tuple(g.shape) or buf.dtype != g.dtype or type(buf) is not type(g):
        return None
    return buf


def _accumulate(leaves: dict, dev) -> None:
    pending = []  # (leaf, buffer, gradient): first gradients written into registered buffers
    for t, g in leaves.values():
        if t._hooks:
            g = _run_hooks(t._hooks, g, dev)
        buf = _grad_buffer(t, g)
        if t.grad is None:
            if buf is not None:
                pending.append((t, buf, g))
            else:
                # a gradient may be shared with other nodes (Add passes its gradient through to both
                # inputs): each leaf gets its own copy so in-place edits of one .grad stay local
                t.grad = Tensor._wrap(g.copy(), t._device)
        elif buf is not None and t.grad._data is buf:
            buf += g  # accumulate in place, into the optimizer's buffer
            t.grad._vc[0] += 1
        else:
            t.grad = Tensor._wrap(t.grad._data + g, t._device)
    if not pending:
        return
    xp = dev.backend
    if len(pending) > 1 and hasattr(xp, "copy_many"):
        xp.copy_many([b for _, b, _ in pending], [g for _, _, g in pending])  # a few launches for all
    else:
        for _, buf, g in pending:
            buf[...] = g
    for t, buf, _ in pending:
        t.grad = Tensor._wrap(buf, t._device)
