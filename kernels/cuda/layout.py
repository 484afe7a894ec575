"""Strided layout arithmetic, the same for every device: where the elements of a view lie in
its flat storage (element units). Pure Python on shapes and strides, no memory and no device:
the CUDA backend builds its views (reshape without a copy, transpose, broadcast, basic
indexing) from these, and the kernels read their operands through the strides they give.

A view is ``(offset, shape, strides)`` over one flat storage: element ``(i0, i1, ...)`` lies at
``offset + sum(i_k * strides[k])``.
"""
from __future__ import annotations

import numpy as np

AxisError = getattr(np, "exceptions", np).AxisError   # NumPy's (np.exceptions from NumPy 1.25)


def element_count(shape) -> int:
    """The number of elements of ``shape`` (1 for ``()``)."""
    n = 1
    for s in shape:
        n *= int(s)
    return n


def c_strides(shape) -> tuple[int, ...]:
    """The strides of a C-contiguous (row-major) array of ``shape``."""
    strides, step = [], 1
    for s in reversed(shape):
        strides.append(step)
        step *= int(s)
    return tuple(reversed(strides))


def is_c_contiguous(shape, strides) -> bool:
    """True when ``(shape, strides)`` lays the elements out in C order with no gaps (size-1 axes
    may have any stride; an empty array is contiguous)."""
    if element_count(shape) == 0:
        return True
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def span(shape, strides) -> int:
    """How many consecutive storage elements a non-empty view touches, from its first element."""
    return 1 + sum((int(n) - 1) * int(s) for n, s in zip(shape, strides))


def broadcast_strides(shape, strides, out_shape) -> tuple[int, ...]:
    """Strides of a view seen as ``out_shape``: 0 on broadcast (size-1 or missing) axes."""
    lead = len(out_shape) - len(shape)
    if lead < 0 or any(n != o and n != 1 for n, o in zip(shape, out_shape[max(lead, 0):])):
        raise ValueError("operands could not be broadcast together with remapped shapes "   # NumPy's words
                         f"[original->remapped]: {numpy_shape(shape)}  and requested shape {numpy_shape(out_shape)}")
    res = [0] * lead
    for n, s in zip(shape, strides):
        res.append(0 if n == 1 else s)
    return tuple(res)


def numpy_shape(shape) -> str:
    """A shape written as NumPy writes it in its error messages: ``(2,3)``, ``(3,)``."""
    shape = tuple(int(n) for n in shape)
    return "(" + ",".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def nocopy_strides(shape, strides, newshape):
    """Strides that view ``(shape, strides)`` as ``newshape`` without moving data, or None when
    no such strides exist (NumPy's rule: each group of new axes must cover old axes that are
    contiguous with each other)."""
    if is_c_contiguous(shape, strides):
        return c_strides(newshape)
    old = [(n, s) for n, s in zip(shape, strides) if n != 1]
    old_shape = [n for n, _ in old]
    old_strides = [s for _, s in old]
    new_strides = [0] * len(newshape)
    old_i, old_j, new_i, new_j = 0, 1, 0, 1
    while new_i < len(newshape) and old_i < len(old_shape):
        new_size, old_size = newshape[new_i], old_shape[old_i]
        while new_size != old_size:   # grow the smaller side until both groups hold as many elements
            if new_size < old_size:
                new_size *= newshape[new_j]
                new_j += 1
            else:
                old_size *= old_shape[old_j]
                old_j += 1
        for k in range(old_i, old_j - 1):
            if old_strides[k] != old_shape[k + 1] * old_strides[k + 1]:
                return None
        new_strides[new_j - 1] = old_strides[old_j - 1]
        for k in range(new_j - 1, new_i, -1):
            new_strides[k - 1] = new_strides[k] * newshape[k]
        new_i, new_j, old_i, old_j = new_j, new_j + 1, old_j, old_j + 1
    return tuple(new_strides)   # trailing size-1 axes keep stride 0


def permutation(axes, ndim: int) -> tuple[int, ...]:
    """``axes`` of ``transpose`` as a permutation of ``range(ndim)`` (reversed when empty/None)."""
    if not axes:
        return tuple(range(ndim - 1, -1, -1))
    if len(axes) != ndim:
        raise ValueError("axes don't match array")   # NumPy's words, as on the CPU
    for a in axes:
        if not -max(ndim, 1) <= int(a) < max(ndim, 1):
            raise AxisError(f"axis {int(a)} is out of bounds for array of dimension {ndim}")
    perm = tuple(int(a) % max(ndim, 1) for a in axes)
    if len(set(perm)) != ndim:
        raise ValueError("repeated axis in transpose")
    return perm


def moveaxis_order(ndim: int, source, destination) -> list[int]:
    """The permutation that moves axes ``source`` to positions ``destination`` (NumPy's moveaxis)."""
    src = [s % ndim for s in ((source,) if isinstance(source, int) else source)]
    dst = [d % ndim for d in ((destination,) if isinstance(destination, int) else destination)]
    order = [i for i in range(ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return order


def index_slots(shape, strides, items):
    """Plan ``a[items]`` for an array of ``shape`` / ``strides``. ``items`` are classified index
    entries: ``("int", i)``, ``("slice", s)``, ``("new",)`` (None), ``("ell",)`` (at most one
    Ellipsis) and ``("arr", index_array)``. Returns ``(offset, slots)``: the element offset of
    the first selected element and one slot per axis of the plan, ``("basic", length, stride)``
    for an axis of the result or ``("adv", index_array, size, stride, axis)`` for an axis indexed
    by an array (``index_array`` None for an int among arrays: it is folded into ``offset``).
    Raises NumPy's IndexError for too many indices or an int out of range."""
    ndim = len(shape)
    ncons = sum(1 for it in items if it[0] in ("arr", "slice", "int"))
    nell = sum(1 for it in items if it[0] == "ell")
    if nell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ncons > ndim:
        raise IndexError(f"too many indices for array: array is {ndim}-dimensional, but {ncons} were indexed")
    fill = [("slice", slice(None))] * (ndim - ncons)
    if nell:
        k = [it[0] for it in items].index("ell")
        items = list(items[:k]) + fill + list(items[k + 1:])
    else:
        items = list(items) + fill
    has_arrays = any(it[0] == "arr" for it in items)
    offset, axis, slots = 0, 0, []
    for it in items:
        if it[0] == "new":
            slots.append(("basic", 1, 0))
            continue
        n, s = shape[axis], strides[axis]
        if it[0] == "slice":
            start, stop, step = it[1].indices(n)
            if step < 0:
                raise NotImplementedError("negative-step slices are not supported on cuda")
            length = max(0, -(-(stop - start) // step))
            if length:
                offset += start * s
            slots.append(("basic", length, s * step))
        elif it[0] == "int":
            i = it[1]
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
            offset += (i % n) * s
            if has_arrays:
                slots.append(("adv", None, n, s, axis))
        else:
            slots.append(("adv", it[1], n, s, axis))
        axis += 1
    return offset, slots


def advanced_layout(slots, index_shape, index_strides=None):
    """Where the result of an advanced index lies, from ``index_slots``' slots and the broadcast
    shape of the index arrays: ``(out_shape, source_strides, offset_strides)``. As in NumPy, the
    index axes replace the indexed axes in place when those are adjacent, else they go first;
    ``source_strides`` walk the source over the basic axes (0 on index axes) and
    ``offset_strides`` walk the C-contiguous array of per-cell offsets (0 on basic axes), or an
    array of ``index_shape`` with ``index_strides`` when those are given."""
    positions = [k for k, sl in enumerate(slots) if sl[0] == "adv"]
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    basic = [(sl[1], sl[2]) for sl in slots if sl[0] == "basic"]
    lead = sum(1 for k, sl in enumerate(slots) if sl[0] == "basic" and k < positions[0]) if adjacent else 0
    out_shape = [n for n, _ in basic[:lead]] + list(index_shape) + [n for n, _ in basic[lead:]]
    source_strides = [s for _, s in basic[:lead]] + [0] * len(index_shape) + [s for _, s in basic[lead:]]
    inner = c_strides(index_shape) if index_strides is None else index_strides
    offset_strides = [0] * lead + list(inner) + [0] * (len(basic) - lead)
    return out_shape, source_strides, offset_strides


def basic_selection(shape, idx):
    """Where ``a[idx]`` lies in ``a`` (of ``shape``) for a basic index (ints, slices with a
    positive step, ``None``, one ``Ellipsis``), per axis of ``a``: ``(starts, steps, counts,
    result_axes, result_ndim)``. Axis ``k`` selects ``starts[k] + steps[k] * t`` for ``t`` in
    ``[0, counts[k])``, which is axis ``result_axes[k]`` of the result (-1 for an int index: the
    axis is dropped). None when ``idx`` is not such an index (arrays, bools, negative steps); the
    errors of ``index_slots`` for too many indices or an int out of range."""
    items = idx if isinstance(idx, tuple) else (idx,)
    for it in items:
        if not (it is None or it is Ellipsis or isinstance(it, slice)
                or (isinstance(it, int) and not isinstance(it, bool))):
            return None
        if isinstance(it, slice) and it.step is not None and it.step < 0:
            return None
    ndim = len(shape)
    ncons = sum(1 for it in items if it is not None and it is not Ellipsis)
    nell = sum(1 for it in items if it is Ellipsis)
    if nell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ncons > ndim:
        raise IndexError(f"too many indices for array: array is {ndim}-dimensional, but {ncons} were indexed")
    fill = [slice(None)] * (ndim - ncons)
    if nell:
        k = [it is Ellipsis for it in items].index(True)
        items = list(items[:k]) + fill + list(items[k + 1:])
    else:
        items = list(items) + fill
    starts, steps, counts, axes = [], [], [], []
    result = axis = 0
    for it in items:
        if it is None:
            result += 1
            continue
        n = int(shape[axis])
        if isinstance(it, slice):
            start, stop, step = it.indices(n)
            starts.append(start)
            steps.append(step)
            counts.append(max(0, -(-(stop - start) // step)))
            axes.append(result)
            result += 1
        else:
            if not -n <= it < n:
                raise IndexError(f"index {it} is out of bounds for axis {axis} with size {n}")
            starts.append(it % n)
            steps.append(1)
            counts.append(1)
            axes.append(-1)
        axis += 1
    return starts, steps, counts, axes, result
