"""The threaded CPU matmul (kernels/cpu/matmul.py) against the NumPy reference: every split
(2-D rows, 3-D batches), awkward and length-1 sizes, non-contiguous operands, both float dtypes."""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future

import numpy as np
import pytest

from minitrans import threads
from minitrans.kernels import reference
from minitrans.kernels.cpu import matmul as mm

TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture
def three_threads(monkeypatch):
    """Split into three blocks whatever Numba's pool size, and split even tiny products."""
    monkeypatch.setattr(mm, "get_num_threads", lambda: 3)
    monkeypatch.setattr(mm, "MIN_FLOPS", 0)


def _views(rng, shape, dt, layout):
    """An operand of ``shape``: C-contiguous, transposed (F-order), or a stride-2 slice."""
    if layout == "c":
        return rng.standard_normal(shape).astype(dt)
    if layout == "t":
        return np.swapaxes(rng.standard_normal(shape[:-2] + shape[:-3:-1]).astype(dt), -1, -2)
    return rng.standard_normal(shape[:-2] + (2 * shape[-2], shape[-1])).astype(dt)[..., ::2, :]


def _check(a, b):
    got = mm.matmul(a, b)
    want = reference.matmul(a, b)
    assert got.shape == want.shape and got.dtype == a.dtype
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= TOL[a.dtype.type] * scale * max(1, a.shape[-1]) ** 0.5


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (1, 5, 3), (2, 3, 1), (7, 13, 5), (64, 33, 17), (301, 128, 96)])
@pytest.mark.parametrize("la, lb", [("c", "c"), ("t", "c"), ("c", "t"), ("s", "t")])
def test_2d_matches_reference(three_threads, dt, m, k, n, la, lb):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    _check(_views(rng, (m, k), dt, la), _views(rng, (k, n), dt, lb))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("bsz, m, k, n", [(1, 4, 3, 2), (2, 1, 1, 1), (5, 17, 8, 17), (13, 64, 32, 64)])
@pytest.mark.parametrize("la, lb", [("c", "c"), ("c", "t"), ("t", "s")])
def test_batched_matches_reference(three_threads, dt, bsz, m, k, n, la, lb):
    rng = np.random.default_rng(bsz * 7 + m)
    _check(_views(rng, (bsz, m, k), dt, la), _views(rng, (bsz, k, n), dt, lb))


def _spy_on_blas_calls(monkeypatch):
    """Record (thread name, OpenBLAS count, rows) at every np.matmul the kernel makes."""
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append((threading.current_thread().name, threads.get_blas_num_threads(), a.shape[0]))
        return real(a, b, out=out)

    monkeypatch.setattr(mm.np, "matmul", spy)
    return seen


def test_blocks_run_on_the_worker_threads_when_blas_is_single_threaded(three_threads, monkeypatch):
    seen = _spy_on_blas_calls(monkeypatch)
    workers_started = threading.Semaphore(0)
    spy = mm.np.matmul

    def caller_waits_for_the_workers(a, b, out=None):
        if threading.current_thread().name.startswith("minitrans-worker"):
            workers_started.release()
        else:          # the calling thread's own block: hold it until both workers have taken theirs
            assert workers_started.acquire(timeout=30) and workers_started.acquire(timeout=30)
        return spy(a, b, out=out)

    monkeypatch.setattr(mm.np, "matmul", caller_waits_for_the_workers)
    a, b = np.ones((10, 4), np.float32), np.ones((4, 3), np.float32)
    with threads.limit_blas_threads(1):
        assert (mm.matmul(a, b) == 4).all()
    assert sorted(s[2] for s in seen) == [2, 4, 4]                       # rows 0-3, 4-7, 8-9
    assert sum(s[0].startswith("minitrans-worker") for s in seen) == 2    # two blocks on the pool
    assert all(s[1] == 1 for s in seen)                                  # each a one-thread BLAS call


class _NeverStartedFuture(Future):
    def result(self, timeout=None):
        raise AssertionError("the caller waited for a block that no worker had started")


class _PoolThatNeverStarts:
    """A worker pool whose workers never get a core: submitted blocks stay pending."""

    def __init__(self):
        self.futures = []

    def submit(self, fn, *args):
        self.futures.append(_NeverStartedFuture())
        return self.futures[-1]


def test_blocks_no_worker_has_started_are_computed_by_the_caller(three_threads, monkeypatch):
    seen = _spy_on_blas_calls(monkeypatch)
    pool = _PoolThatNeverStarts()
    monkeypatch.setattr(mm, "worker_pool", lambda n: pool)
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((10, 4)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    with threads.limit_blas_threads(1):
        got = mm.matmul(a, b)
    np.testing.assert_array_equal(got, np.concatenate([a[:4] @ b, a[4:8] @ b, a[8:] @ b]))
    assert [s[2] for s in seen] == [4, 4, 2]                             # all three blocks, in order
    assert {s[0] for s in seen} == {threading.current_thread().name}
    assert len(pool.futures) == 2 and all(f.cancelled() for f in pool.futures)


def test_multithreaded_blas_gets_the_whole_product_and_keeps_its_count(three_threads, monkeypatch):
    if threads.get_blas_num_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS that minitrans.threads can reach")
    seen = _spy_on_blas_calls(monkeypatch)
    a, b = np.ones((10, 4), np.float32), np.ones((4, 3), np.float32)
    with threads.limit_blas_threads(2):
        assert (mm.matmul(a, b) == 4).all()
    assert seen == [(threading.current_thread().name, 2, 10)]             # one call, BLAS left on 2


@pytest.mark.parametrize("a_shape, b_shape", [((3,), (3, 2)), ((2, 3, 4), (4, 5)), ((4, 2, 3), (1, 3, 2))])
def test_other_shapes_go_to_numpy_unchanged(three_threads, a_shape, b_shape):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    np.testing.assert_allclose(mm.matmul(a, b), reference.matmul(a, b), rtol=1e-12, atol=1e-12)


def test_mixed_dtypes_and_bad_shapes_behave_as_numpy(three_threads):
    a32, b64 = np.ones((6, 3), np.float32), np.ones((3, 2), np.float64)
    assert mm.matmul(a32, b64).dtype == np.float64
    with pytest.raises(ValueError):
        mm.matmul(np.ones((4, 3)), np.ones((2, 5)))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(1, 3, 2), (7, 13, 5), (301, 128, 96)])
@pytest.mark.parametrize("lb", ["c", "t"])
def test_addmm_adds_the_bias_in_every_block_bit_for_bit(three_threads, dt, m, k, n, lb):
    """addmm gives exactly what the product then ``+= bias`` gave (the bias added once, to every row,
    whichever thread computed it), whether minitrans's threads or OpenBLAS run the product; and
    a @ b + bias within rounding of the NumPy reference."""
    rng = np.random.default_rng(m + k + n)
    a, b = _views(rng, (m, k), dt, "c"), _views(rng, (k, n), dt, lb)
    bias = rng.standard_normal(n).astype(dt)
    for blas_one_thread in (True, False):
        with threads.limit_blas_threads(1) if blas_one_thread else contextlib.nullcontext():
            want = mm.matmul(a, b)
            want += bias
            got = mm.addmm(bias, a, b)
        assert got.dtype == a.dtype
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got, reference.addmm(bias, a, b), rtol=TOL[dt], atol=TOL[dt] * k)
