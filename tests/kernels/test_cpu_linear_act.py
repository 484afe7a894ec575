"""The Linear layer's CPU kernels: ``addmm_relu`` and ``linear_backward`` (kernels/cpu/matmul.py),
``relu_backward_column_sums`` (kernels/cpu/linear_act.py) and the one-thread column sums
(kernels/cpu/reduce.py), against float64 NumPy formulas written here; awkward and length-1 sizes,
non-contiguous operands, both float dtypes, and the same bits on one thread as on several."""
from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pytest

from minitrans import threads
from minitrans.kernels.cpu import linear_act
from minitrans.kernels.cpu import matmul as mm
from minitrans.kernels.cpu import reduce as red

TOL = {np.float32: 1e-5, np.float64: 1e-12}
SIZES = [(1, 1, 1), (1, 5, 3), (7, 1, 2), (2, 3, 1), (33, 13, 130), (301, 128, 96)]   # (m, k, n)


def _operand(rng, shape, dt, layout):
    """C-contiguous, a transpose (F-order) or a stride-2 slice of rows, with values of ``shape``."""
    if layout == "c":
        return rng.standard_normal(shape).astype(dt)
    if layout == "t":
        return rng.standard_normal(shape[::-1]).astype(dt).T
    return rng.standard_normal((2 * shape[0], shape[1])).astype(dt)[::2]


def _close(got, want, dt, k):
    assert got.dtype == dt
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dt] * scale * max(1, k) ** 0.5)


@pytest.fixture
def split_everything(monkeypatch):
    """Three threads whatever Numba's pool size, with every product and mask pass split, and OpenBLAS
    on one thread (the setting under which minitrans hands blocks to its own threads)."""
    for module in (mm, linear_act):
        monkeypatch.setattr(module, "get_num_threads", lambda: 3)
    monkeypatch.setattr(mm, "MIN_FLOPS", 0)
    monkeypatch.setattr(linear_act, "MIN_SIZE", 0)
    monkeypatch.setattr(linear_act, "MIN_COLUMNS_PER_TASK", 1)
    with threads.limit_blas_threads(1):
        yield


def _one_thread(monkeypatch):
    for module in (mm, linear_act):
        monkeypatch.setattr(module, "get_num_threads", lambda: 1)


# ----------------------------------------------------------------------------- addmm_relu
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", SIZES)
@pytest.mark.parametrize("la, lb", [("c", "t"), ("s", "c")])
def test_addmm_relu_is_the_clamped_product_plus_bias(split_everything, monkeypatch, dt, m, k, n, la, lb):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = _operand(rng, (m, k), dt, la), _operand(rng, (k, n), dt, lb)
    bias = rng.standard_normal(n).astype(dt)
    got = mm.addmm_relu(bias, a, b)
    want = np.maximum(a.astype(np.float64) @ b.astype(np.float64) + bias, 0)
    _close(got, want, dt, k)
    # the same bits as the unfused steps split the same way (by rows over three threads, or whole)
    np.testing.assert_array_equal(got, np.maximum(mm.addmm(bias, a, b), 0))
    _one_thread(monkeypatch)
    np.testing.assert_array_equal(mm.addmm_relu(bias, a, b), np.maximum(mm.addmm(bias, a, b), 0))
    np.testing.assert_array_equal(mm.addmm_relu(None, a, b), np.maximum(a @ b, 0))


def test_addmm_relu_keeps_nan_and_clamps_inf(split_everything):
    a = np.array([[np.nan, 0.0], [1.0, 0.0], [-np.inf, 0.0], [np.inf, 0.0]], np.float32)
    got = mm.addmm_relu(np.zeros(1, np.float32), a, np.ones((2, 1), np.float32))
    assert np.isnan(got[0, 0]) and got[1, 0] == 1 and got[2, 0] == 0 and got[3, 0] == np.inf


def test_addmm_relu_turns_negative_zero_into_positive_zero_as_numpy_maximum(split_everything):
    a, b = np.zeros((4, 3), np.float32), -np.ones((3, 5), np.float32)        # every product -0.0
    for bias in (np.full(5, -0.0, np.float32), None):
        got = mm.addmm_relu(bias, a, b)
        want = np.maximum(a @ b + (0 if bias is None else bias), 0)
        assert not np.signbit(got).any() and not np.signbit(want).any()


def _numpy_bias_relu(y, bias):
    out = np.array(y, copy=True)
    if bias is not None:
        out += bias
    np.maximum(out, 0, out=out)
    return out


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (64, 300)])
def test_bias_relu_and_bias_inplace_are_numpys_steps_bit_for_bit(dt, shape):
    rng = np.random.default_rng(shape[1])
    y = rng.standard_normal(shape).astype(dt)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], dt)
    y.flat[::3] = np.resize(specials, y.flat[::3].shape)
    bias = rng.standard_normal(shape[1]).astype(dt)
    bias[::4] = -0.0
    cases = [(y.copy(), bias), (y.copy(), bias[::-1].copy()[::-1]), (y.copy(), None),   # strided bias, no bias
             (np.asfortranarray(y), bias), (y.copy(), bias.astype(np.float16))]          # NumPy's own steps
    for target, b in cases:
        want = _numpy_bias_relu(target, b)
        got = linear_act.bias_relu_inplace(target, b)
        assert got is target and got.dtype == dt
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
        if b is not None:
            want = target + b
            got = linear_act.add_bias_inplace(target, b)
            assert got is target and got.dtype == dt
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


# ----------------------------------------------------------------------------- relu_backward_column_sums
def _mask_reference(y, g):
    gp = np.where(y > 0, g.astype(np.float64), 0.0)
    return gp, gp.sum(axis=0)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("m, n", [(1, 1), (1, 7), (9, 1), (33, 130), (300, 257)])
@pytest.mark.parametrize("layout", ["c", "t", "s"])
def test_relu_backward_column_sums_against_numpy(split_everything, monkeypatch, dt, m, n, layout):
    rng = np.random.default_rng(m * 1000 + n)
    y = np.maximum(_operand(rng, (m, n), dt, layout), 0)
    y[: max(1, m // 3), 0] = 0                                 # exact zeros: ReLU's gradient there is 0
    g = _operand(rng, (m, n), dt, "s" if layout == "c" else "c")
    gp, sums = linear_act.relu_backward_column_sums(y, g)
    want_gp, want_sums = _mask_reference(y, g)
    assert gp.dtype == dt and gp.shape == (m, n) and sums.shape == (n,)
    np.testing.assert_array_equal(gp, want_gp.astype(dt))     # a selection: exact
    _close(sums, want_sums, dt, m)
    # the same bits as the two unfused passes (row-order column sums), and as on one thread
    np.testing.assert_array_equal(sums, red.sum(np.ascontiguousarray(np.where(y > 0, g, 0)), axis=0))
    _one_thread(monkeypatch)
    gp1, sums1 = linear_act.relu_backward_column_sums(y, g)
    np.testing.assert_array_equal(gp1, gp)
    np.testing.assert_array_equal(sums1, sums)
    assert linear_act.relu_backward_column_sums(y, g, needs_sums=False)[1] is None


def test_relu_backward_is_zero_where_the_output_is_not_positive_even_for_inf_and_nan(split_everything):
    y = np.array([[0.0, 1.0, 0.0, 2.0]] * 3, np.float32)
    g = np.array([[np.nan, 3.0, np.inf, np.nan]] * 3, np.float32)
    gp, sums = linear_act.relu_backward_column_sums(y, g)
    np.testing.assert_array_equal(gp[:, :3], [[0, 3, 0]] * 3)
    assert np.isnan(gp[:, 3]).all()
    np.testing.assert_array_equal(sums[:3], [0, 9, 0])
    assert np.isnan(sums[3])


def test_relu_backward_of_zero_rows_and_of_integer_gradients():
    gp, sums = linear_act.relu_backward_column_sums(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
    assert gp.shape == (0, 3) and sums.dtype == np.float32
    np.testing.assert_array_equal(sums, [0, 0, 0])
    gp, sums = linear_act.relu_backward_column_sums(np.array([[1.0, 0.0]]), np.array([[2, 5]]))
    np.testing.assert_array_equal(gp, [[2, 0]])
    np.testing.assert_array_equal(sums, [2, 0])


# ----------------------------------------------------------------------------- linear_backward
def _grads_reference(g, x, w):
    g, x, w = (v.astype(np.float64) for v in (g, x, w))
    return g @ w, g.T @ x, g.sum(axis=0)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", SIZES)
@pytest.mark.parametrize("layout", ["c", "t", "s"])
def test_linear_backward_against_numpy_and_the_same_on_one_thread(split_everything, monkeypatch,
                                                                  dt, m, k, n, layout):
    rng = np.random.default_rng(m * 100 + k * 10 + n + 7)
    g, x = _operand(rng, (m, n), dt, layout), _operand(rng, (m, k), dt, "c")
    w = _operand(rng, (n, k), dt, "t" if layout == "c" else "c")
    got = mm.linear_backward(g, x, w)
    for part, want, inner in zip(got, _grads_reference(g, x, w), (n, m, m)):
        _close(part, want, dt, inner)
    _one_thread(monkeypatch)
    for part, one in zip(got, mm.linear_backward(g, x, w)):
        np.testing.assert_array_equal(part, one)


def test_linear_backward_gives_none_for_what_is_not_needed(split_everything):
    rng = np.random.default_rng(1)
    g, x, w = rng.standard_normal((6, 4)), rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    full = mm.linear_backward(g, x, w)
    for needs in [(True, False, False), (False, True, True), (False, False, True), (True, True, False)]:
        got = mm.linear_backward(g, x, w, needs)
        for part, need, ref in zip(got, needs, full):
            assert (part is None) == (not need)
            if need:
                np.testing.assert_array_equal(part, ref)


@pytest.mark.parametrize("needs", [(True, True, True), (True, False, True), (False, True, False)])
def test_linear_backward_of_a_relu_output_is_that_of_the_masked_gradient(split_everything, needs):
    rng = np.random.default_rng(11)
    g, x, w = rng.standard_normal((40, 70)), rng.standard_normal((40, 9)), rng.standard_normal((70, 9))
    y = np.maximum(rng.standard_normal((40, 70)), 0)
    got = mm.linear_backward(g, x, w, needs, relu_out=y)
    want = mm.linear_backward(np.where(y > 0, g, 0), x, w, needs)
    for part, ref, need in zip(got, want, needs):
        assert (part is None) == (not need)
        if need:
            np.testing.assert_array_equal(part, ref)


def _spy(monkeypatch):
    """Record (thread name, OpenBLAS count, result shape) at every np.matmul the kernel makes."""
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        r = real(a, b, out=out)
        seen.append((threading.current_thread().name, threads.get_blas_num_threads(), r.shape))
        return r

    monkeypatch.setattr(mm.np, "matmul", spy)
    return seen


def test_the_two_products_run_whole_one_on_a_worker_one_on_the_caller(split_everything, monkeypatch):
    seen = _spy(monkeypatch)
    started = threading.Event()
    spy = mm.np.matmul

    def caller_waits_for_the_worker(a, b, out=None):
        if threading.current_thread().name.startswith("minitrans-worker"):
            started.set()
        else:
            assert started.wait(timeout=30)
        return spy(a, b, out=out)

    monkeypatch.setattr(mm.np, "matmul", caller_waits_for_the_worker)
    g, x, w = np.ones((10, 4), np.float32), np.ones((10, 3), np.float32), np.ones((4, 3), np.float32)
    gx, gw, gb = mm.linear_backward(g, x, w)
    assert (gx == 4).all() and (gw == 10).all() and (gb == 10).all()
    assert sorted(s[2] for s in seen) == [(4, 3), (10, 3)]            # two calls, neither split by rows
    assert {s[0].startswith("minitrans-worker") for s in seen} == {True, False}
    assert all(s[1] in (1, None) for s in seen)


class _NeverStarted(Future):
    def result(self, timeout=None):
        raise AssertionError("the caller waited for a product that no worker had started")


def test_a_product_no_worker_started_is_computed_by_the_caller(split_everything, monkeypatch):
    seen = _spy(monkeypatch)
    futures = []
    pool = type("Pool", (), {"submit": lambda self, *a: futures.append(_NeverStarted()) or futures[-1]})()
    monkeypatch.setattr(mm, "worker_pool", lambda n: pool)
    monkeypatch.setattr(linear_act, "worker_pool", lambda n: pool)
    rng = np.random.default_rng(3)
    g, x, w = rng.standard_normal((10, 4)), rng.standard_normal((10, 3)), rng.standard_normal((4, 3))
    got = mm.linear_backward(g, x, w)
    for part, want in zip(got, _grads_reference(g, x, w)):
        np.testing.assert_allclose(part, want, rtol=1e-12, atol=1e-12)
    assert {s[0] for s in seen} == {threading.current_thread().name}
    y = np.maximum(g, 0)
    gp, sums = linear_act.relu_backward_column_sums(y, x[:, :1] * g)
    np.testing.assert_array_equal(gp, np.where(y > 0, x[:, :1] * g, 0))
    assert futures and all(f.cancelled() for f in futures)


# ----------------------------------------------------------------------------- column sums on one thread
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (300, 257), (1024, 64)])
def test_column_sums_on_this_thread_are_the_parallel_sums_bit_for_bit(monkeypatch, dt, shape):
    monkeypatch.setattr(red, "MIN_SIZE", 0)
    a = np.random.default_rng(shape[0]).standard_normal(shape).astype(dt)
    got = red.column_sums_on_this_thread(a)
    np.testing.assert_array_equal(got, red.sum(a, axis=0))
    _close(got, a.astype(np.float64).sum(axis=0), dt, shape[0])
    np.testing.assert_array_equal(red.column_sums_on_this_thread(a[:, ::2]), np.sum(a[:, ::2], axis=0))
