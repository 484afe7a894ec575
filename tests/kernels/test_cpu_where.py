"""The CPU where (a compiled pass for array-or-constant selections, NumPy for the rest) against np.where."""
import numpy as np
import pytest

import minitrans as mt
from minitrans.backends.cpu import CPUBackend
from minitrans.kernels.cpu import where as where_module
from minitrans.kernels.cpu.where import MIN_SIZE, _fast_form, where

RNG = np.random.default_rng(3)
SHAPE = (64, MIN_SIZE // 32)          # exactly MIN_SIZE * 2 elements


def _same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("const", [0, -2.5, np.inf, np.nan, "scalar of the dtype"])
@pytest.mark.parametrize("array_first", [True, False])
def test_fast_form_matches_numpy(dtype, const, array_first):
    arr = RNG.standard_normal(SHAPE).astype(dtype)
    cond = RNG.random(SHAPE) > 0.5
    const = dtype(1.25) if const == "scalar of the dtype" else const
    a, b = (arr, const) if array_first else (const, arr)
    assert _fast_form(cond, a, b) is not None
    _same(where(cond, a, b), np.where(cond, a, b))


@pytest.mark.parametrize("layout", ["transposed array", "transposed cond", "strided array"])
def test_other_layouts_take_the_fast_form_after_a_copy(layout):
    arr = RNG.standard_normal(SHAPE).astype(np.float32)
    cond = RNG.random(SHAPE) > 0.5
    if layout == "transposed array":
        arr = np.ascontiguousarray(arr.T).T
    elif layout == "transposed cond":
        cond = np.ascontiguousarray(cond.T).T
    else:
        arr = RNG.standard_normal((SHAPE[0], 2 * SHAPE[1])).astype(np.float32)[:, ::2]
    assert _fast_form(cond, arr, 0) is not None
    _same(where(cond, arr, 0), np.where(cond, arr, 0))


@pytest.mark.parametrize("case", ["small", "other dtype scalar", "broadcast cond", "two arrays", "int array",
                                  "int cond", "float overflowing float32", "float16 array"])
def test_other_calls_are_numpys(case):
    arr = RNG.standard_normal(SHAPE).astype(np.float32)
    cond, a, b = RNG.random(SHAPE) > 0.5, arr, 0
    if case == "small":
        cond, a = cond[:2], arr[:2]
    elif case == "other dtype scalar":
        b = np.float64(1.5)                           # NumPy promotes the result to float64
    elif case == "broadcast cond":
        cond = cond[:1]
    elif case == "two arrays":
        b = arr * 2
    elif case == "int array":
        a = (arr * 10).astype(np.int32)
    elif case == "int cond":
        cond = cond.astype(np.int8)
    elif case == "float16 array":
        a = arr.astype(np.float16)
    else:
        b = 1e300
    assert _fast_form(cond, a, b) is None
    with np.errstate(over="ignore"):
        _same(where(cond, a, b), np.where(cond, a, b))


def test_cpu_backend_uses_it():
    assert CPUBackend.where is where_module.where


def test_relu_gradient_is_zero_where_the_output_is_not_positive_even_for_nan_gradients():
    x = mt.tensor(np.array([[-1.0, 0.0, 2.0, 3.0]] * (MIN_SIZE // 2), np.float32), requires_grad=True)
    g = np.array([[np.nan, np.inf, 5.0, np.nan]] * (MIN_SIZE // 2), np.float32)
    mt.nn.functional.relu(x).backward(mt.tensor(g))
    want = np.array([[0.0, 0.0, 5.0, np.nan]] * (MIN_SIZE // 2), np.float32)
    np.testing.assert_array_equal(x.grad.numpy(), want)
