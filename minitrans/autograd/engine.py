"""The backward engine: one iterative reverse-topological walk over the recorded graph.

Gradients are summed per node before its ``backward`` runs, reduced to each input's
shape here (so ops never undo broadcasting themselves), and accumulated into leaves'
``.grad`` as soon as its last contribution has arrived (so a leaf's hooks run while the
rest of the graph is still being walked: data-parallel training starts its gradient
all-reduce there). Saved arrays are freed after use unless ``retain_graph=True``.
Callbacks queued with ``queue_callback`` during a backward run once it has finished.
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


_CALLBACKS: list = []          # run at the end of the backward that is under way
# id(leaf) -> (weak reference to it, [hook(leaf)]): hooks run after the leaf's .grad is updated.
# Keyed by id with a weak reference (Tensor's == is elementwise, so it cannot key a WeakKeyDictionary).
_POST_ACCUMULATE: dict = {}


def queue_callback(fn) -> None:
    """Run ``fn()`` once the backward pass under way has finished (after every ``.grad`` is written)."""
    _CALLBACKS.append(fn)


def register_post_accumulate_grad_hook(t: Tensor, hook) -> list:
    """Add ``hook(t)``, run after ``t.grad`` is updated; returns the list holding it (for removal)."""
    k = id(t)
    entry = _POST_ACCUMULATE.get(k)
    if entry is None or entry[0]() is not t:
        entry = _POST_ACCUMULATE[k] = (weakref.ref(t, lambda _r, k=k: _POST_ACCUMULATE.pop(k, None)), [])
    entry[1].append(hook)
    return entry[1]


def _run_callbacks() -> None:
    while _CALLBACKS:
        _CALLBACKS.pop(0)()


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
    try:
        _backward(tensor, g0, retain_graph)
    except BaseException:
        _CALLBACKS.clear()
        raise
    _run_callbacks()


def _backward(tensor: Tensor, g0, retain_graph: bool) -> None:
    dev = tensor._device
    with no_grad():
        if tensor._node is None:
            _accumulate(tensor, g0, dev)
            return
        root = tensor._node
        deps = {root: 0}
        leaf_deps: dict = {}                  # id(leaf) -> edges into it not yet walked
        stack = [root]
        while stack:
            n = stack.pop()
            for p in n.parents:
                if p is None:
                    continue
                if isinstance(p, Function):
                    c = deps.get(p)
                    if c is None:
                        deps[p] = 1
                        stack.append(p)
                    else:
                        deps[p] = c + 1
                else:
                    leaf_deps[id(p)] = leaf_deps.get(id(p), 0) + 1
        grads = {root: g0}
        leaves: dict = {}                     # id(leaf) -> (leaf, gradient summed so far)
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
                if p is None:
                    continue
                if gi is None:
                    if not isinstance(p, Function):
                        _leaf_edge_done(p, leaves, leaf_deps, dev)
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
                    _leaf_edge_done(p, leaves, leaf_deps, dev)


def _leaf_edge_done(p: Tensor, leaves: dict, leaf_deps: dict, dev) -> None:
    """One edge into leaf ``p`` was walked; after the last one its summed gradient is final."""
    k = id(p)
    c = leaf_deps[k] - 1
    leaf_deps[k] = c
    if c == 0 and k in leaves:
        _accumulate(*leaves.pop(k), dev)


def _reduce(n: Function, gi, shape):
    try:
        return n.xp.sum_to(gi, shape)
    except ValueError:
        raise RuntimeError(f"{type(n).__name__}.backward returned a gradient of shape {tuple(gi.shape)}, "
                           f"which does not broadcast to its input's shape {tuple(shape)}") from None


def _accumulate(t: Tensor, g, dev) -> None:
    if t._hooks:
        g = _run_hooks(t._hooks, g, dev)
    if t.grad is None:
        # a gradient may be shared with other nodes (Add passes its gradient through to both
        # inputs): each leaf gets its own copy so in-place edits of one .grad stay local
        t.grad = Tensor._wrap(g.copy(), t._device)
    else:
        t.grad = Tensor._wrap(t.grad._data + g, t._device)
    post = _POST_ACCUMULATE.get(id(t)) if _POST_ACCUMULATE else None
    if post is not None and post[0]() is t:
        for h in list(post[1]):
            h(t)
