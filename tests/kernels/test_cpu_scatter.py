"""The CPU add_at (compiled row scatter, NumPy for everything else) against np.add.at."""
import numpy as np
import pytest

from minitrans.backends.cpu import CPUBackend
from minitrans.kernels.cpu.scatter import _is_row_scatter, add_at

RNG = np.random.default_rng(7)


def _both(out, idx, values):
    ours, numpy_result = out.copy(), out.copy()
    add_at(ours, idx, values)
    np.add.at(numpy_result, idx, values)
    return ours, numpy_result


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("row_shape", [(), (5,), (3, 4)])
def test_row_scatter_matches_numpy_bit_for_bit(dtype, row_shape):
    out = RNG.standard_normal((6,) + row_shape).astype(dtype)
    idx = np.array([0, 5, 5, -1, 2, 0, -6, 3, 3, 3])          # repeats and negative indices
    values = RNG.standard_normal(idx.shape + row_shape).astype(dtype)
    assert _is_row_scatter(out, idx, values)
    ours, numpy_result = _both(out, idx, values)
    np.testing.assert_array_equal(ours, numpy_result)


@pytest.mark.parametrize("row_shape", [(), (3,)])
def test_no_indices_change_nothing(row_shape):
    out = RNG.standard_normal((2,) + row_shape)
    idx = np.array([], np.int64)
    ours, numpy_result = _both(out, idx, np.zeros((0,) + row_shape))
    np.testing.assert_array_equal(ours, numpy_result)
    np.testing.assert_array_equal(ours, out)


def test_embedding_sized_scatter_accumulates_every_row():
    out = np.zeros((64, 8), np.float32)
    idx = RNG.integers(0, 64, 2048)
    add_at(out, idx, np.ones((2048, 8), np.float32))
    np.testing.assert_array_equal(out[:, 0], np.bincount(idx, minlength=64).astype(np.float32))


@pytest.mark.parametrize("bad", [6, -7])
def test_out_of_range_index_raises_numpys_error_and_changes_nothing(bad):
    out = np.zeros((6, 2))
    idx = np.array([1, bad])
    with pytest.raises(IndexError) as ours:
        add_at(out, idx, np.ones((2, 2)))
    with pytest.raises(IndexError) as numpys:
        np.add.at(np.zeros((6, 2)), idx, np.ones((2, 2)))
    assert str(ours.value) == str(numpys.value)
    assert not out.any()


@pytest.mark.parametrize("case", [
    "tuple index", "bool index", "broadcast values", "int out", "float16 out", "strided out", "scalar-like index"])
def test_other_calls_go_to_numpy(case):
    out = RNG.standard_normal((4, 3))
    idx, values = np.array([0, 2, 2]), RNG.standard_normal((3, 3))
    if case == "tuple index":
        idx, values = (np.array([0, 1, 1]), np.array([2, 2, 0])), np.array([1.0, 2.0, 3.0])
    elif case == "bool index":
        idx, values = np.array([True, False, True, False]), RNG.standard_normal((2, 3))
    elif case == "broadcast values":
        values = np.array([1.0, 2.0, 3.0])
    elif case == "int out":
        out, values = np.zeros((4, 3), np.int64), np.ones((3, 3), np.int64)
    elif case == "float16 out":
        out, values = out.astype(np.float16), values.astype(np.float16)
    elif case == "strided out":
        out = RNG.standard_normal((3, 4)).T
    else:
        idx = np.array([[0, 2], [2, 1]])
        values = RNG.standard_normal((2, 2, 3))
    assert not _is_row_scatter(out, idx, values)
    ours, numpy_result = _both(out, idx, values)
    np.testing.assert_array_equal(ours, numpy_result)


def test_cpu_backend_uses_it():
    assert CPUBackend.add_at is add_at
