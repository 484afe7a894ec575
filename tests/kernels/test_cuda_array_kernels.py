"""kernels/cuda/array.py (the CUDA array backend's plumbing) against NumPy references."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numba import cuda  # noqa: E402

from minitrans.kernels import reference as xref  # noqa: E402
from minitrans.kernels.cuda import array as KA  # noqa: E402
from minitrans.kernels.cuda._util import flat_view  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def small_threads():
    saved = KA.THREADS, KA.MAX_BLOCKS
    KA.THREADS, KA.MAX_BLOCKS = 8, 3
    yield
    KA.THREADS, KA.MAX_BLOCKS = saved


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_full_and_arange(dtype):
    np.testing.assert_array_equal(KA.full((3, 5), 1, dtype).copy_to_host(), xref.full((3, 5), 1, dtype))
    if dtype != np.bool_:
        np.testing.assert_allclose(KA.arange(7, 2, 3, dtype).copy_to_host(), xref.arange(7, 2, 3, dtype))


def test_copy_into_strided_destination_with_broadcast_source():
    dst = dev(np.zeros((4, 6)))
    src = dev(np.arange(3.0).reshape(3, 1))
    KA.copy_into(dst[1:, ::2], src)
    want = np.zeros((4, 6))
    want[1:, ::2] = np.arange(3.0).reshape(3, 1)
    np.testing.assert_array_equal(dst.copy_to_host(), want)


def test_logical_maps():
    a = np.array([1.0, np.inf, -np.inf, np.nan, 0.0])
    np.testing.assert_array_equal(KA.logical_unary("isfinite", dev(a)).copy_to_host(), np.isfinite(a))
    p, q = np.array([[True, False, True]]), np.array([[True], [False]])
    np.testing.assert_array_equal(KA.logical_unary("not", dev(p)).copy_to_host(), ~p)
    for op, f in xref.LOGICAL_BINARY.items():
        np.testing.assert_array_equal(KA.logical_binary(op, dev(p), dev(q)).copy_to_host(), f(p, q))


def _lin(x_shape, idx_arrays, dims):
    """lin for x[..., idx_k on dims ...] of a C-contiguous x, via index_linear."""
    st = [int(np.prod(x_shape[d + 1:], dtype=np.int64)) for d in range(len(x_shape))]
    bshape = np.broadcast_shapes(*[i.shape for i in idx_arrays])
    lin = KA.full(bshape, 0, np.int64)
    for i, d in zip(idx_arrays, dims):
        KA.index_linear(lin, dev(i), x_shape[d], st[d])
    return lin, bshape


def test_gather_and_scatter_add_with_repeats():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    i0, i1 = np.array([[0, 4], [-1, 0]]), np.array([3, 3])
    lin, bshape = _lin(x.shape, [i0, i1], [0, 1])
    xf, _ = flat_view(dev(x))
    got = KA.gather(xf, lin, bshape, (0, 0), (2, 1), x.dtype).copy_to_host()
    np.testing.assert_array_equal(got, xref.take(x, (i0, i1)))
    # rows x[idx] (one index array, a kept trailing dim) and scatter-add back
    idx = np.array([1, 3, 1, 1])
    lin, _ = _lin(x.shape, [idx], [0])
    rows = KA.gather(xf, lin, (4, 4), (0, 1), (1, 0), x.dtype)
    np.testing.assert_array_equal(rows.copy_to_host(), x[idx])
    out = dev(np.zeros((5, 4)))
    of, _ = flat_view(out)
    KA.scatter(of, rows, lin, (4, 4), (0, 1), (1, 0), accumulate=True)
    np.testing.assert_allclose(out.copy_to_host(), xref.put_add((5, 4), idx, x[idx], np.float64))


def test_out_of_range_index_gathers_zero_and_is_skipped_by_scatter():
    x = np.arange(6.0)
    lin, _ = _lin(x.shape, [np.array([1, 9, -7])], [0])
    xf, _ = flat_view(dev(x))
    np.testing.assert_array_equal(KA.gather(xf, lin, (3,), (0,), (1,), x.dtype).copy_to_host(), [1.0, 0.0, 0.0])
    out = dev(np.zeros(6))
    of, _ = flat_view(out)
    KA.scatter(of, dev(np.ones(3)), lin, (3,), (0,), (1,), accumulate=False)
    np.testing.assert_array_equal(out.copy_to_host(), [0, 1, 0, 0, 0, 0])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_matches_reference(p):
    seed = 0x1234_5678_9ABC_DEF
    got = KA.dropout_mask((7, 9), p, seed, np.float32).copy_to_host()
    np.testing.assert_array_equal(got, xref.dropout_mask((7, 9), p, seed, np.float32))
    assert not np.array_equal(got, KA.dropout_mask((7, 9), p, seed + 1, np.float32).copy_to_host())
