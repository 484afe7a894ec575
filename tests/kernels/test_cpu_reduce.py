"""The CPU sum (compiled column sums of large 2-D arrays, NumPy for the rest) against np.sum."""
import numpy as np
import pytest

from minitrans.backends.cpu import CPUBackend
from minitrans.kernels.cpu import reduce as reduce_module

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2048, 384), (4096, 33), (257, 1000), (16384, 2)])
@pytest.mark.parametrize("threads", [1, 3])
def test_column_sums_equal_numpys_bit_for_bit(dtype, shape, threads, monkeypatch):
    monkeypatch.setattr(reduce_module, "get_num_threads", lambda: threads)
    monkeypatch.setattr(reduce_module, "MIN_COLUMNS_PER_TASK", 1)      # split even narrow arrays
    monkeypatch.setattr(reduce_module, "THREADED_MIN_ELEMENTS", 1)     # and small ones
    a = (RNG.standard_normal(shape) * 10.0 ** RNG.integers(-3, 4, shape)).astype(dtype)
    for axis in (0, -2):
        got = reduce_module.sum(a, axis=axis)
        want = np.sum(a, axis=axis)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_a_call_that_takes_the_compiled_pass_does_not_call_numpy(monkeypatch):
    monkeypatch.setattr(reduce_module.np, "sum", None)       # calling it would raise TypeError
    a = RNG.standard_normal((1024, 64)).astype(np.float32)
    assert reduce_module.sum(a, axis=0).shape == (64,)


@pytest.mark.parametrize("case", ["whole", "axis 1", "keepdims", "dtype", "transposed", "small", "int", "3-D",
                                  "axis tuple"])
def test_other_calls_are_numpys(case, monkeypatch):
    calls = []
    real = np.sum
    monkeypatch.setattr(reduce_module.np, "sum", lambda *a, **k: calls.append(1) or real(*a, **k))
    a, kwargs = RNG.standard_normal((1024, 64)).astype(np.float32), dict(axis=0)
    if case == "whole":
        kwargs = {}
    elif case == "axis 1":
        kwargs = dict(axis=1)
    elif case == "keepdims":
        kwargs = dict(axis=0, keepdims=True)
    elif case == "dtype":
        kwargs = dict(axis=0, dtype=np.float64)
    elif case == "transposed":
        a = np.ascontiguousarray(a.T).T
    elif case == "small":
        a = a[:8]
    elif case == "int":
        a = (a * 100).astype(np.int64)
    elif case == "3-D":
        a = a.reshape(64, 16, 64)
    else:
        kwargs = dict(axis=(0,))
    got = reduce_module.sum(a, **kwargs)
    np.testing.assert_array_equal(got, real(a, **kwargs))
    assert calls == [1]


def test_a_bool_axis_is_refused_as_numpy_refuses_it():
    a = RNG.standard_normal((1024, 64)).astype(np.float32)
    with pytest.raises(TypeError) as ours:
        reduce_module.sum(a, axis=False)
    with pytest.raises(TypeError) as numpys:
        np.sum(a, axis=False)
    assert str(ours.value) == str(numpys.value)


def test_cpu_backend_uses_it():
    assert CPUBackend.sum is reduce_module.sum
