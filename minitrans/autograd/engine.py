"""The backward engine: one iterative reverse-topological walk over the recorded graph.

Gradients are summed per node before its ``backward`` runs, reduced to each input's
shape here (so ops never undo broadcasting themselves), and accumulated into leaves'
``.grad`` as soon as its last contribution has arrived (so a leaf's hooks run while the
rest of the graph is still being walked: data-parallel training starts its gradient
all-reduce there). Saved arrays are freed after use unless ``retain_graph=True``.
Callbacks queued with ``queue_callback`` during a backward run once it has finished.
Gradients meeting at a node (a residual stream) are summed in place into the first of them when
nothing else holds it (NumPy's reuse of temporaries, see ``_walk``), else into a new array.

A leaf can have a gradient buffer (``set_grad_buffer``; the optimizers register their
parameters' slices of a flat buffer): its gradient is then written into that buffer — one
copy, as for any leaf, but into memory the optimizer updates with one launch — and later
backward passes accumulate into it in place. First gradients bound for buffers are copied
together at the end of backward (a few launches for all of them), except for a leaf with a
post-accumulate hook, whose gradient is written at once so the hook sees it. Without a
buffer a leaf's first gradient is a private copy and accumulation makes a new array.
"""
from __future__ import annotations

import weakref

from .._tensor_core import TensorBase
from .anomaly import check_backward
from .function import Function
from .grad_mode import STATE, no_grad


def _as_grad_array(t: TensorBase, gradient):
    xp = t._device.backend
    if gradient is None:
        if t.numel() != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for scalar outputs; this tensor has shape {tuple(t.shape)}: "
                "call backward(gradient) with a gradient of the same shape")
        return xp.ones(t.shape, t._data.dtype)
    if isinstance(gradient, TensorBase):
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
# Keyed by id with a weak reference (a tensor's == is elementwise, so it cannot key a WeakKeyDictionary).
_POST_ACCUMULATE: dict = {}


def queue_callback(fn) -> None:
    """Run ``fn()`` once the backward pass under way has finished (after every ``.grad`` is written)."""
    _CALLBACKS.append(fn)


def _weak_ref_dropping_entry(t: TensorBase, table: dict, key: int) -> weakref.ref:
    """A weak reference to ``t`` that removes ``table[key]`` when ``t`` dies — only if the entry is still
    ``t``'s (a new tensor may reuse the id), and harmlessly at interpreter exit."""
    def drop(r, table=table, key=key):
        entry = table.get(key)
        if entry is not None and entry[0] is r:
            del table[key]
    return weakref.ref(t, drop)


def register_post_accumulate_grad_hook(t: TensorBase, hook) -> list:
    """Add ``hook(t)``, run after ``t.grad`` is updated; returns the list holding it (for removal)."""
    k = id(t)
    entry = _POST_ACCUMULATE.get(k)
    if entry is None or entry[0]() is not t:
        entry = _POST_ACCUMULATE[k] = (_weak_ref_dropping_entry(t, _POST_ACCUMULATE, k), [])
    entry[1].append(hook)
    return entry[1]


def _run_callbacks() -> None:
    while _CALLBACKS:
        _CALLBACKS.pop(0)()


def _run_hooks(hooks, g, dev):
    for h in hooks:
        r = h(TensorBase._wrap(g, dev))
        if r is not None:
            g = r._data if isinstance(r, TensorBase) else r
    return g


def backward(tensor: TensorBase, gradient=None, retain_graph: bool = False) -> None:
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


def _backward(tensor: TensorBase, g0, retain_graph: bool) -> None:
    pending: list = []                        # first gradients waiting for their buffers
    _walk(tensor, g0, retain_graph, pending)
    _flush(pending, tensor._device)


def _walk(tensor: TensorBase, g0, retain_graph: bool, pending: list) -> None:
    dev = tensor._device
    with no_grad():
        if tensor._node is None:
            _accumulate(tensor, g0, dev, pending)
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
        grads: dict = {}                      # node -> gradient summed so far, while more edges into it remain
        leaf_grads: dict = {}                 # id(leaf) -> its gradient summed so far, while more edges remain
        ready = [(root, g0)]                  # nodes whose gradient is complete, with it
        anomaly = STATE.anomaly
        while ready:
            n, g = ready.pop()
            if n._hooks:
                g = _run_hooks(n._hooks, g, dev)
            if n._retain is not None:
                t = n._retain()
                if t is not None:
                    t.grad = TensorBase._wrap(g if t.grad is None else t.grad._data + g, dev)
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
                        _leaf_edge_done(p, leaf_grads, leaf_deps, dev, pending)
                    continue
                if gi.shape != shape:
                    gi = _reduce(n, gi, shape)
                gdt = gi.dtype
                if gdt is not dt and gdt != dt:     # identity first: NumPy's dtype == is slower
                    gi = gi.astype(dt)
                # Sums are written ``partial.pop(key) + gi``: the partial sum is then a temporary, and
                # NumPy adds into it in place (no new array) when nothing else references it and it
                # owns its memory — a sum made here, or a gradient that no op, hook, retained .grad
                # or caller holds. Anything still held gets a new array, as before.
                if isinstance(p, Function):
                    c = deps[p] - 1
                    if c == 0:                # its last edge: the gradient is complete
                        ready.append((p, grads.pop(p) + gi if p in grads else gi))
                    else:
                        deps[p] = c
                        grads[p] = grads.pop(p) + gi if p in grads else gi
                else:
                    k = id(p)
                    c = leaf_deps[k] - 1
                    leaf_deps[k] = c
                    if k in leaf_grads:
                        gi = leaf_grads.pop(k) + gi
                    if c == 0:                # its last edge: the leaf's gradient is final
                        _accumulate(p, gi, dev, pending)
                    else:
                        leaf_grads[k] = gi


def _leaf_edge_done(p: TensorBase, leaf_grads: dict, leaf_deps: dict, dev, pending: list) -> None:
    """An edge into leaf ``p`` brought no gradient; after its last edge the summed gradient is final."""
    k = id(p)
    c = leaf_deps[k] - 1
    leaf_deps[k] = c
    if c == 0 and k in leaf_grads:
        _accumulate(p, leaf_grads.pop(k), dev, pending)


def _reduce(n: Function, gi, shape):
    try:
        return n.xp.sum_to(gi, shape)
    except ValueError:
        raise RuntimeError(f"{type(n).__name__}.backward returned a gradient of shape {tuple(gi.shape)}, "
                           f"which does not broadcast to its input's shape {tuple(shape)}") from None


_GRAD_BUFFERS: dict = {}  # id(leaf) -> (weakref to the leaf, array its gradient is written into)


def set_grad_buffer(t: TensorBase, buf) -> None:
    """Write ``t``'s future gradients into ``buf`` (an array of ``t``'s shape, dtype and device)."""
    key = id(t)
    old = _GRAD_BUFFERS.get(key)
    if old is not None and old[0]() is t and old[1] is buf:
        return
    _GRAD_BUFFERS[key] = (_weak_ref_dropping_entry(t, _GRAD_BUFFERS, key), buf)


def _grad_buffer(t: TensorBase, g):
    e = _GRAD_BUFFERS.get(id(t))
    if e is None or e[0]() is not t:
        return None
    buf = e[1]
    if tuple(buf.shape) != tuple(g.shape) or buf.dtype != g.dtype or type(buf) is not type(g):
        return None
    return buf


def _post_hooks(t: TensorBase):
    post = _POST_ACCUMULATE.get(id(t)) if _POST_ACCUMULATE else None
    return post[1] if post is not None and post[0]() is t else None


def _accumulate(t: TensorBase, g, dev, pending: list) -> None:
    """Add ``g`` into leaf ``t``'s ``.grad``; a first gradient bound for a buffer may wait in ``pending``."""
    if t._hooks:
        g = _run_hooks(t._hooks, g, dev)
    buf = _grad_buffer(t, g)
    post = _post_hooks(t)
    if t.grad is None:
        if buf is not None and post is None:
            pending.append((t, buf, g))      # copied with the others by _flush, at the end of backward
            return
        if buf is not None:
            buf[...] = g
            t.grad = TensorBase._wrap(buf, t._device)
        else:
            # a gradient may be shared with other nodes (Add passes its gradient through to both
            # inputs): each leaf gets its own copy so in-place edits of one .grad stay local
            t.grad = TensorBase._wrap(g.copy(), t._device)
    elif buf is not None and t.grad._data is buf:
        buf += g  # accumulate in place, into the optimizer's buffer
        t.grad._version_counter[0] += 1
    else:
        t.grad = TensorBase._wrap(t.grad._data + g, t._device)
    if post is not None:
        for h in list(post):
            h(t)


def _flush(pending: list, dev) -> None:
    """Write the first gradients that wait for their buffers: a few launches for all of them."""
    if not pending:
        return
    dev.backend.copy_many([b for _, b, _ in pending], [g for _, _, g in pending])
    for t, buf, _ in pending:
        t.grad = TensorBase._wrap(buf, t._device)
