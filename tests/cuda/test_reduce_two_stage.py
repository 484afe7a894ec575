"""Two-stage grid reductions against NumPy (simulator, tiny sizes: ``ROW_CHUNK`` and
``TARGET_BLOCKS`` are shrunk here so a few dozen elements take both stages): full reductions and
few-outputs-long-rows reductions run on many blocks, then a final pass; awkward sizes, length 1
and non-contiguous inputs."""
import numpy as np
import pytest

from minitrans.backends.cuda import CUDABackend as xp
from minitrans.kernels.cuda.reduce import _splits


@pytest.fixture(autouse=True)
def small_slices(monkeypatch):
    import importlib

    module = importlib.import_module("minitrans.kernels.cuda.reduce")   # the package re-exports reduce()
    monkeypatch.setattr(module, "ROW_CHUNK", 4)
    monkeypatch.setattr(module, "TARGET_BLOCKS", 8)
from minitrans.kernels.cuda._util import counters


def _reduce(fn):
    counters.reset()
    r = xp.to_numpy(fn())
    return r, counters.launched.get("reduce.reduce_kernel", 0), counters.launches


@pytest.mark.parametrize("n", [1, 7, 23])
@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_full_reduction_matches_numpy(op, n):
    x = np.random.default_rng(n).standard_normal(n)
    got, reduce_launches, _ = _reduce(lambda: getattr(xp.from_numpy(x), op)())
    np.testing.assert_allclose(got, getattr(x, op)(), rtol=1e-12)
    stages = 1 if _splits(1, n) == 1 else 2
    assert reduce_launches == stages
    if n == 23:
        assert stages == 2   # one output, a long row: partials on several blocks, then a final pass


def test_non_contiguous_inputs_and_few_long_columns():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((13, 6)).astype(np.float32)
    da = xp.from_numpy(a)
    # a bias gradient: 3 outputs (every other column), rows of 13 strided cells
    got, reduce_launches, _ = _reduce(lambda: xp.sum(da[:, ::2], axis=0))
    np.testing.assert_allclose(got, a[:, ::2].sum(axis=0), rtol=1e-5)
    assert got.dtype == np.float32 and reduce_launches == 2
    got, _, _ = _reduce(lambda: xp.transpose(da).max())
    assert got == a.max()
    got, _, _ = _reduce(lambda: xp.transpose(da).mean(axis=(0, 1), keepdims=True))
    np.testing.assert_allclose(got, a.T.mean(axis=(0, 1), keepdims=True), rtol=1e-5)
    got, _, _ = _reduce(lambda: da[2:3, 1:2].sum())   # one element, strided
    assert got == a[2, 1]
    # many outputs: one block each, one launch
    got, reduce_launches, _ = _reduce(lambda: xp.min(da, axis=1))
    np.testing.assert_array_equal(got, a.min(axis=1))
    assert reduce_launches == 1


def test_bool_and_int32_sums_accumulate_in_int64_without_a_cast():
    m = np.random.default_rng(1).standard_normal((5, 5)) > 0
    got, reduce_launches, launches = _reduce(lambda: xp.sum(xp.from_numpy(m)))
    assert got.dtype == np.int64 and got == m.sum()
    assert launches == reduce_launches   # no cast launch first
    i = np.arange(-7, 20, dtype=np.int32)
    got, _, launches = _reduce(lambda: xp.sum(xp.from_numpy(i)[::2]))
    assert got.dtype == np.int64 and got == i[::2].sum()
    got, _, _ = _reduce(lambda: xp.sum(xp.from_numpy(np.zeros((3, 0), np.int32)), axis=1))
    np.testing.assert_array_equal(got, np.zeros(3, np.int64))
