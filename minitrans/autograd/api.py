"""The public autograd functions ``backward`` and ``grad`` (PyTorch's ``torch.autograd.backward`` /
``torch.autograd.grad``), over the engine's single-output backward pass."""
from __future__ import annotations

import weakref

from .._tensor_core import TensorBase
from . import engine
from .function import Function

_NO_DOUBLE_BACKWARD = (
    "{name}: create_graph=True (double backward, e.g. Hessian-vector products or gradient penalties) is not "
    "supported: minitrans backward passes run on raw arrays and are not recorded as a graph, so the gradient "
    "could not itself be differentiated. Compute second-order quantities with finite differences of first-order "
    "gradients instead (see docs/gradients.md).")


def _tensor_list(x, name: str, what: str) -> list:
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    for i, t in enumerate(items):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{name}: {what}[{i}] must be a Tensor, got {type(t).__name__}")
    return items


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph: bool = False, inputs=None) -> None:
    """Accumulate the gradients of ``tensors`` (weighted by ``grad_tensors``) into the leaves' ``.grad``."""
    if create_graph:
        raise NotImplementedError(_NO_DOUBLE_BACKWARD.format(name="backward"))
    if inputs is not None:
        raise NotImplementedError("backward: inputs= is not supported; use mt.autograd.grad(outputs, inputs)")
    tensors = _tensor_list(tensors, "backward", "tensors")
    grad_tensors = [None] * len(tensors) if grad_tensors is None else (
        list(grad_tensors) if isinstance(grad_tensors, (list, tuple)) else [grad_tensors])
    if len(grad_tensors) != len(tensors):
        raise RuntimeError(f"backward: got {len(grad_tensors)} grad_tensors for {len(tensors)} tensors")
    for t, g in zip(tensors, grad_tensors):
        engine.backward(t, g, retain_graph=True if len(tensors) > 1 else bool(retain_graph))


def _graph_leaves(outputs) -> list:
    """Every leaf tensor reachable from ``outputs`` (those whose ``.grad`` a backward pass would touch)."""
    seen, leaves, stack = set(), {}, [o._node for o in outputs if o._node is not None]
    for o in outputs:
        if o._node is None and o.requires_grad:
            leaves[id(o)] = o
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        for p in n.parents:
            if isinstance(p, Function):
                stack.append(p)
            elif p is not None:
                leaves[id(p)] = p
    return list(leaves.values())


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph: bool = False,
         allow_unused: bool = False):
    """The gradients of ``outputs`` with respect to ``inputs``, as a tuple; no ``.grad`` is changed.

    As ``torch.autograd.grad``: ``grad_outputs`` weights each output (needed for non-scalar
    outputs), ``allow_unused=True`` returns ``None`` for an input the outputs do not depend on.
    """
    if create_graph:
        raise NotImplementedError(_NO_DOUBLE_BACKWARD.format(name="grad"))
    outputs = _tensor_list(outputs, "grad", "outputs")
    inputs = _tensor_list(inputs, "grad", "inputs")
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] does not require grad (One of the differentiated Tensors "
                               "does not require grad)")
    for i, o in enumerate(outputs):
        if not o.requires_grad:
            raise RuntimeError(f"grad: outputs[{i}] does not require grad and does not have a grad_fn")
    grad_outputs = [None] * len(outputs) if grad_outputs is None else (
        list(grad_outputs) if isinstance(grad_outputs, (list, tuple)) else [grad_outputs])
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad: got {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    leaves = _graph_leaves(outputs)
    saved = [(t, t.grad) for t in leaves] + [(t, t.grad) for t in inputs if t._node is not None]
    retains = [(t._node, t._node._retain) for t in inputs if t._node is not None]
    try:
        for t, _ in saved:
            t.grad = None
        for t in inputs:
            if t._node is not None:
                t._node._retain = weakref.ref(t)
        keep = bool(retain_graph)
        for k, (o, g) in enumerate(zip(outputs, grad_outputs)):
            engine.backward(o, g, retain_graph=keep or k < len(outputs) - 1)
        result = tuple(t.grad for t in inputs)
    finally:
        for node, r in retains:
            node._retain = r
        for t, g in saved:
            t.grad = g
    for i, g in enumerate(result):
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: inputs[{i}] (shape {tuple(inputs[i].shape)}) appears not to have been used "
                               "in the graph; set allow_unused=True if this is the desired behavior")
    return result
