"""Type promotion follows PyTorch (docs/differences.md), not NumPy.

* int/bool tensor ⊗ float tensor -> that float dtype; float32 ⊗ float64 -> float64;
* int/bool tensor ⊗ Python float -> float32 (never float64); a float tensor keeps its
  dtype against any Python number (and NumPy scalars act as Python numbers);
* int / int -> float32; int ⊗ int -> int64; bool ⊗ Python int -> int64;
* the same for reflected ops (``2.5 - t``, ``0.5 ** t``, ...).

The expected dtype comes from the rules above; the values from NumPy evaluated in that
dtype, here in the test.
"""
import operator

import numpy as np
import pytest

import minitrans as mt

OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
       "pow": operator.pow}
_RNG = np.random.default_rng(7)
# operands: tensors of each dtype (two shapes, so broadcasting takes part) and Python numbers
OPERANDS = {
    "int64": np.array([[1, 2, 3], [4, 1, 2]], np.int64),
    "bool": np.array([True, False, True]),
    "float32": _RNG.uniform(0.5, 2.0, (2, 3)).astype(np.float32),
    "float64": _RNG.uniform(0.5, 2.0, (3,)),
    "py_float": 1.5,
    "py_int": 2,
    "np_float64": np.float64(1.25),     # NumPy scalars act as Python numbers: never float64 for a float32 tensor
    "np_int64": np.int64(3),
}
_CATEGORY = {"b": 0, "i": 1, "f": 2}


def _is_scalar(name):
    return not isinstance(OPERANDS[name], np.ndarray)


def expected_dtype(op, x, y):
    """PyTorch's result dtype for ``x op y`` (NumPy dtype)."""
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        kx, ky = x.dtype.kind, y.dtype.kind
        if kx == "f" and ky == "f":
            out = np.result_type(x.dtype, y.dtype)
        elif kx == "f" or ky == "f":
            out = x.dtype if kx == "f" else y.dtype
        else:
            out = np.dtype(np.int64) if "i" in (kx, ky) else np.dtype(bool)
    else:
        t, s = (x, y) if isinstance(x, np.ndarray) else (y, x)
        ks = "f" if isinstance(s, float) else "i"
        if _CATEGORY[ks] > _CATEGORY[t.dtype.kind]:      # the number's kind is higher: its default dtype
            out = np.dtype(np.float32) if ks == "f" else np.dtype(np.int64)
        else:                                             # otherwise the tensor keeps its dtype
            out = t.dtype
    if op == "truediv" and out.kind != "f":
        out = np.dtype(np.float32)
    return np.dtype(out)


def _numpy_ref(op, x, y, dtype):
    cast = lambda v: np.asarray(v).astype(dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(OPS[op](cast(x), cast(y)))


def _as_mt(v):
    return mt.tensor(v) if isinstance(v, np.ndarray) else v


PAIRS = [(a, b) for a in OPERANDS for b in OPERANDS
         if not (_is_scalar(a) and _is_scalar(b)) and not (a == "bool" and b == "bool")]


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("left,right", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_binary_op_result_dtype_and_values(op, left, right):
    x, y = OPERANDS[left], OPERANDS[right]
    want = expected_dtype(op, x, y)
    with np.errstate(divide="ignore", invalid="ignore"):   # x / False is inf, as in NumPy and PyTorch
        out = OPS[op](_as_mt(x), _as_mt(y))     # a Python number on the left runs the reflected op
    assert isinstance(out, mt.Tensor)
    assert out.numpy().dtype == want, f"{left} {op} {right}: got {out.dtype}, PyTorch gives {want}"
    ref = _numpy_ref(op, x, y, want)
    assert out.shape == ref.shape
    if want.kind == "f":
        rtol = 1e-6 if want == np.float32 else 1e-12
        np.testing.assert_allclose(out.numpy(), ref, rtol=rtol, atol=0)
    else:
        np.testing.assert_array_equal(out.numpy(), ref)


def test_expected_dtype_table_spot_checks():
    """The rule function itself, against the table in docs/differences.md."""
    i, b = OPERANDS["int64"], OPERANDS["bool"]
    f32, f64 = OPERANDS["float32"], OPERANDS["float64"]
    assert expected_dtype("add", i, f32) == np.float32
    assert expected_dtype("mul", i, 1.5) == np.float32
    assert expected_dtype("truediv", i, i) == np.float32
    assert expected_dtype("sub", b, f64) == np.float64
    assert expected_dtype("add", f32, f64) == np.float64
    assert expected_dtype("add", f32, 1.5) == np.float32
    assert expected_dtype("add", b, 2) == np.int64
    assert expected_dtype("pow", i, 2) == np.int64


@pytest.mark.parametrize("case,want", [
    (lambda: mt.tensor([1, 2]) + 0.5, ([1.5, 2.5], np.float32)),
    (lambda: 0.5 + mt.tensor([1, 2]), ([1.5, 2.5], np.float32)),
    (lambda: mt.tensor([1, 2]) - 0.25, ([0.75, 1.75], np.float32)),
    (lambda: 3.0 - mt.tensor([1, 2]), ([2.0, 1.0], np.float32)),
    (lambda: 1 / mt.tensor([2, 4]), ([0.5, 0.25], np.float32)),
    (lambda: mt.tensor([3, 4]) / 2, ([1.5, 2.0], np.float32)),
    (lambda: mt.tensor([3, 4]) / mt.tensor([2, 8]), ([1.5, 0.5], np.float32)),
    (lambda: mt.tensor([1, 4]) ** 0.5, ([1.0, 2.0], np.float32)),
    (lambda: 0.5 ** mt.tensor([1, 2]), ([0.5, 0.25], np.float32)),
    (lambda: 2 ** mt.tensor([1, 3]), ([2, 8], np.int64)),
    (lambda: mt.tensor([True, False]) * 2.5, ([2.5, 0.0], np.float32)),
    (lambda: mt.tensor([True, False]) + 1, ([2, 1], np.int64)),
    (lambda: mt.add(mt.tensor([1, 2]), 0.5), ([1.5, 2.5], np.float32)),
    (lambda: mt.tensor([1, 2]) + np.float64(0.5), ([1.5, 2.5], np.float32)),     # NumPy scalar = Python number
    (lambda: mt.tensor([1.0, 2.0]) * np.float64(0.5), ([0.5, 1.0], np.float32)),
    (lambda: np.float64(0.5) * mt.tensor([1.0, 2.0]), ([0.5, 1.0], np.float32)),
    (lambda: mt.tensor([1, 3]).maximum(mt.tensor([2.5, 0.5])), ([2.5, 3.0], np.float32)),
    (lambda: mt.tensor([1, 3]).minimum(2.5), ([1.0, 2.5], np.float32)),
], ids=lambda v: "" if callable(v) else None)
def test_named_promotions(case, want):
    values, dtype = want
    out = case()
    assert out.numpy().dtype == dtype, f"got {out.dtype}, want {np.dtype(dtype)}"
    np.testing.assert_allclose(out.numpy(), np.asarray(values, dtype), rtol=1e-6)


@pytest.mark.parametrize("other_dtype", [mt.int64, mt.bool])
@pytest.mark.parametrize("float_dtype", [mt.float32, mt.float64])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "truediv"])
def test_gradient_reaches_the_float_operand_in_its_dtype(op, float_dtype, other_dtype):
    other = mt.tensor([1, 3, 2]) if other_dtype is mt.int64 else mt.tensor([True, op == "truediv", True])
    w = mt.tensor(np.array([0.5, 1.5, 2.5]).astype(float_dtype.np), requires_grad=True)
    for out in (OPS[op](other, w), OPS[op](w, other)):
        assert out.dtype is float_dtype
        w.grad = None
        out.sum().backward()
        assert w.grad is not None and w.grad.dtype is float_dtype
    # the last one was w op other: d/dw
    o = other.numpy().astype(np.float64)
    dw = o if op == "mul" else (1.0 / o if op == "truediv" else np.ones(3))
    np.testing.assert_allclose(w.grad.numpy(), dw.astype(float_dtype.np), rtol=1e-6)
