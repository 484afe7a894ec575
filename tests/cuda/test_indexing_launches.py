"""Indexing on cuda in fewer launches, against NumPy: the gradient of a basic index in one launch
(``index_grad``), and gather / assignment / ``add_at`` through one int64 index array read in
place (one launch each, no offset array)."""
import numpy as np
import pytest

import minitrans as mt
from minitrans.backends.cuda import CUDABackend as xp
from minitrans.kernels.cuda._util import counters


def _launches(fn):
    counters.reset()
    r = fn()
    return r, counters.launches


@pytest.mark.parametrize("shape, idx, gshape", [
    ((5, 6), (slice(1, 5, 2), slice(None, None, 3)), (2, 2)),
    ((3, 4, 5), (Ellipsis, 2), (3, 4)),
    ((3, 4, 5), (1, None, slice(1, 4)), (1, 3, 5)),
    ((4, 3), (slice(1, 3),), (3,)),       # g broadcast over the selected rows
    ((4, 3), (slice(3, 1),), (0, 3)),     # an empty selection: all zeros
])
def test_index_grad_of_a_basic_index_is_one_launch(shape, idx, gshape):
    rng = np.random.default_rng(0)
    g = rng.standard_normal(gshape)
    want = np.zeros(shape)
    want[idx] = g
    got, launches = _launches(lambda: xp.index_grad(shape, np.float64, idx, xp.from_numpy(g)))
    np.testing.assert_array_equal(xp.to_numpy(got), want)
    assert launches == 1


def test_index_grad_of_a_strided_gradient_and_a_cast():
    g = np.arange(12.0).reshape(3, 4)
    gt = xp.transpose(xp.from_numpy(g))            # (4, 3), not contiguous
    want = np.zeros((2, 5, 3), np.float32)
    want[1, :4] = g.T
    got = xp.index_grad((2, 5, 3), np.float32, (1, slice(0, 4)), gt)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(xp.to_numpy(got), want)


def test_index_grad_of_an_index_array_sums_repeats():
    idx = np.array([2, 0, 2])
    g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    want = np.zeros((4, 2))
    np.add.at(want, idx, g)
    got = xp.index_grad((4, 2), np.float64, xp.from_numpy(idx), xp.from_numpy(g))
    np.testing.assert_array_equal(xp.to_numpy(got), want)


def test_one_index_array_is_read_in_place():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4, 3))
    idx_host = np.array([[3, -1, 0, 9, -2, 2]])
    idx = xp.from_numpy(idx_host)[:, ::2]   # a strided view on cuda: [[3, 0, -2]]
    idx_host = idx_host[:, ::2]
    assert not xp.is_contiguous(idx)
    dx = xp.from_numpy(x)
    got, launches = _launches(lambda: dx[1:, idx])   # the index array on the middle axis
    np.testing.assert_array_equal(xp.to_numpy(got), x[1:, idx_host])
    assert launches == 1
    got, launches = _launches(lambda: dx[idx])
    np.testing.assert_array_equal(xp.to_numpy(got), x[idx_host])
    assert launches == 1
    # an out-of-range device index reads 0 (range checks are the ops' job: check_index_range)
    np.testing.assert_array_equal(xp.to_numpy(dx[xp.from_numpy(np.array([7, -1])), 0, 0]), [0.0, x[-1, 0, 0]])

    rows = np.array([1, 3, 1, -5])
    vals = rng.standard_normal((4, 4, 3))
    want = x.copy()
    np.add.at(want, rows, vals)
    _, launches = _launches(lambda: xp.add_at(dx, xp.from_numpy(rows), xp.from_numpy(vals)))
    np.testing.assert_allclose(xp.to_numpy(dx), want)
    assert launches == 1

    want[np.array([0, 2]), :, 1] = 7.0
    dx[xp.from_numpy(np.array([0, 2])), :, 1] = 7.0
    np.testing.assert_allclose(xp.to_numpy(dx), want)


def test_getitem_backward_matches_numpy_through_autograd():
    x = np.arange(20.0).reshape(4, 5)
    t = mt.tensor(x, device="cuda", requires_grad=True)
    w = mt.tensor(np.arange(6.0).reshape(3, 2), device="cuda")
    ((t[1:, ::2][:, 1:] * w).sum() + t[mt.tensor(np.array([0, 0, 3]), device="cuda")].sum()).backward()
    want = np.zeros((4, 5))
    want[1:, ::2][:, 1:] = np.arange(6.0).reshape(3, 2)
    np.add.at(want, np.array([0, 0, 3]), 1.0)
    np.testing.assert_array_equal(t.grad.numpy(), want)
