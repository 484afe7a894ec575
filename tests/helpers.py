"""One helper checks an op end to end: ``check_op(mt_fn, np_fn, inputs)``.

It runs ``mt_fn`` on tensors and ``np_fn`` (a NumPy reference written in the test) on
the same arrays and
  (a) compares the float64 forward with the reference at a tight tolerance,
  (b) runs ``mt.autograd.gradcheck`` (float64 central differences, every element),
  (c) reruns the op in float32 and compares it with the reference at a float32
      tolerance, then runs its backward and checks the float32 gradients' dtype,
      shape and closeness to the float64 ones.
Inputs listed in ``noncontig`` reach the op as non-contiguous views: a transposed
tensor (``leaf.permute(reversed)``) for 2-D and up, a stride-2 slice for 1-D.
"""
from __future__ import annotations

import os

import numpy as np

import minitrans as mt

LONG = os.environ.get("MINITRANS_LONG") == "1"


def examples(n: int) -> int:
    """``max_examples`` for a hypothesis test: ``n`` normally, 10·n under ``MINITRANS_LONG=1``."""
    return n * 10 if LONG else n


# ----------------------------------------------------------------------------- values
def rand(rng: np.random.Generator, shape, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return np.asarray(rng.uniform(lo, hi, size=shape))


def positive(rng: np.random.Generator, shape, lo: float = 0.3, hi: float = 2.0) -> np.ndarray:
    return np.asarray(rng.uniform(lo, hi, size=shape))


def grid(rng: np.random.Generator, shape, offset: float = 0.03, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    """Values on the grid k·0.1 + offset: two grids with different offsets never tie, and
    with offset 0.03 every value is ≥ 0.03 away from 0 and from any multiple of 0.1."""
    k = rng.integers(round(lo * 10), round(hi * 10), size=shape)
    return np.asarray(k * 0.1 + offset)


def distinct(rng: np.random.Generator, shape, step: float = 0.07) -> np.ndarray:
    """Pairwise distinct values, at least ``step`` apart and ``step/2`` away from 0 (no ties, no kinks)."""
    n = int(np.prod(shape, dtype=np.int64))
    vals = (np.arange(n) - n // 2 + 0.5) * step
    return rng.permutation(vals).reshape(shape)


# ----------------------------------------------------------------------------- the helper
def _is_float(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def _leaves(inputs, dtype, grad_idx):
    out = []
    for i, x in enumerate(inputs):
        if _is_float(x):
            out.append(mt.tensor(x.astype(dtype.np), requires_grad=i in grad_idx))
        elif isinstance(x, np.ndarray):
            out.append(mt.tensor(x))  # bool masks and int indices: tensors without grad
        else:
            out.append(x)
    return out


def _layout(leaf, x: np.ndarray, dtype, requires_grad: bool):
    """A leaf whose view has ``x``'s values and shape but a non-contiguous layout: (leaf, view)."""
    if x.ndim >= 2:
        rev = tuple(range(x.ndim - 1, -1, -1))
        leaf = mt.tensor(np.ascontiguousarray(x.transpose(rev)).astype(dtype.np), requires_grad=requires_grad)
        return leaf, leaf.permute(*rev)
    if x.ndim == 1:
        wide = np.zeros(2 * x.shape[0], dtype.np)
        wide[::2] = x
        leaf = mt.tensor(wide, requires_grad=requires_grad)
        return leaf, leaf[::2]
    return leaf, leaf


def _make(inputs, dtype, grad_idx, noncontig):
    """(leaves handed to gradcheck, fn(*leaves) -> op inputs)."""
    leaves = _leaves(inputs, dtype, grad_idx)
    layouts = {}
    for i in noncontig:
        if _is_float(inputs[i]) and inputs[i].ndim >= 1:
            leaves[i], _ = _layout(leaves[i], inputs[i], dtype, i in grad_idx)
            layouts[i] = inputs[i].ndim

    def views(ls):
        out = list(ls)
        for i, nd in layouts.items():
            out[i] = ls[i].permute(*range(nd - 1, -1, -1)) if nd >= 2 else ls[i][::2]
        return out

    return leaves, views


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _compare(outs, refs, float_np, rtol, atol, what):
    outs, refs = _as_tuple(outs), _as_tuple(refs)
    assert len(outs) == len(refs), f"{what}: {len(outs)} outputs, reference has {len(refs)}"
    for k, (o, r) in enumerate(zip(outs, refs)):
        r = np.asarray(r)
        assert isinstance(o, mt.Tensor), f"{what}: output {k} is a {type(o).__name__}, not a Tensor"
        got = o.numpy()
        assert got.shape == r.shape, f"{what}: output {k} has shape {got.shape}, reference {r.shape}"
        if r.dtype.kind == "f":
            assert got.dtype == float_np, f"{what}: output {k} has dtype {got.dtype}, expected {float_np}"
            np.testing.assert_allclose(got, r, rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=f"{what}: output {k}")
        else:
            assert got.dtype.kind == r.dtype.kind, f"{what}: output {k} dtype {got.dtype} vs reference {r.dtype}"
            if r.dtype.kind in "iu":
                assert got.dtype == np.int64, f"{what}: integer output {k} should be int64, got {got.dtype}"
            np.testing.assert_array_equal(got, r, err_msg=f"{what}: output {k}")


def _loss(outs, weights):
    total = None
    for o, w in zip(outs, weights):
        if o.requires_grad:
            term = (o * mt.tensor(w.astype(o.numpy().dtype))).sum()
            total = term if total is None else total + term
    return total


def check_op(mt_fn, np_fn, inputs, grad: bool = True, noncontig=(), grad_inputs=None,
             rtol: float = 1e-9, atol: float = 1e-12, rtol32: float = 1e-4, atol32: float = 1e-5,
             gc_atol: float = 1e-5, gc_rtol: float = 1e-3, seed: int = 0) -> None:
    """Check ``mt_fn`` against the NumPy reference ``np_fn`` on ``inputs`` (see the module docstring).

    ``inputs``: NumPy arrays (float arrays become tensors, differentiable unless excluded by
    ``grad_inputs``; bool/int arrays become tensors without grad) or other objects passed as is.
    ``noncontig``: indices of inputs given to the op as non-contiguous views (``True``: all).
    """
    inputs = [np.asarray(x) if isinstance(x, np.generic) else x for x in inputs]  # 0-d draws come as scalars
    floats = [i for i, x in enumerate(inputs) if _is_float(x)]
    grad_idx = set(floats if grad_inputs is None else grad_inputs) if grad else set()
    if noncontig is True:
        noncontig = floats
    elif noncontig is False:
        noncontig = ()
    before = [x.copy() if isinstance(x, np.ndarray) else None for x in inputs]

    # (a) float64 forward against the reference
    ref64 = np_fn(*[x.astype(np.float64) if _is_float(x) else x for x in inputs])
    leaves, views = _make(inputs, mt.float64, grad_idx, noncontig)
    out64 = mt_fn(*views(leaves))
    _compare(out64, ref64, np.float64, rtol, atol, "float64 forward")

    # (b) gradients against float64 central differences, every element
    if grad_idx:
        assert mt.autograd.gradcheck(lambda *ls: mt_fn(*views(ls)), leaves, atol=gc_atol, rtol=gc_rtol)

    # (c) float32: forward against the reference (evaluated in float64 on the float32 values)
    ref32 = np_fn(*[x.astype(np.float32).astype(np.float64) if _is_float(x) else x for x in inputs])
    leaves32, views32 = _make(inputs, mt.float32, grad_idx, noncontig)
    out32 = mt_fn(*views32(leaves32))
    _compare(out32, ref32, np.float32, rtol32, atol32, "float32 forward")

    if grad_idx:
        outs64, outs32 = _as_tuple(out64), _as_tuple(out32)
        rng = np.random.default_rng(seed)
        weights = [rng.standard_normal(o.shape) for o in outs64]
        l64, l32 = _loss(outs64, weights), _loss(outs32, weights)
        if l64 is not None:
            l64.backward()
            l32.backward()
            for i in sorted(grad_idx):
                g64, g32 = leaves[i].grad, leaves32[i].grad
                assert g32 is not None and g64 is not None, f"input {i} got no gradient"
                assert g32.dtype is mt.float32, f"input {i}: float32 run gave a {g32.dtype} gradient"
                assert g32.shape == leaves32[i].shape
                scale = max(1.0, float(np.abs(g64.numpy()).max(initial=0.0)))
                np.testing.assert_allclose(g32.numpy(), g64.numpy(), rtol=1e-3, atol=1e-4 * scale,
                                           err_msg=f"float32 gradient of input {i}")

    for i, (x, b) in enumerate(zip(inputs, before)):
        if b is not None:
            np.testing.assert_array_equal(x, b, err_msg=f"the op changed input array {i}")
