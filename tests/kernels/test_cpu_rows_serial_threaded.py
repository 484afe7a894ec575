"""The LayerNorm and cross-entropy CPU kernels against plain float64 NumPy formulas written here
(not the kernels' own reference module), on awkward sizes, and the same bits from their serial
and threaded versions whatever the number of threads or row runs."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minitrans.kernels.cpu import cross_entropy as ce
from minitrans.kernels.cpu import layer_norm as ln

SHAPES = [(1, 1), (1, 128), (7, 1), (3, 5), (131, 77), (300, 129)]
DTYPES = [np.float32, np.float64]


def _tol(dt):
    return dict(rtol=2e-4, atol=2e-5) if dt == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _ln_forward64(x, w, b, eps):
    x = x.astype(np.float64)
    mu = x.mean(1)
    rstd = 1.0 / np.sqrt(((x - mu[:, None]) ** 2).mean(1) + eps)
    y = (x - mu[:, None]) * rstd[:, None]
    if w is not None:
        y = y * w.astype(np.float64)
    if b is not None:
        y = y + b.astype(np.float64)
    return y, mu, rstd


def _ln_backward64(dy, x, w, eps):
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    _, mu, rstd = _ln_forward64(x, None, None, eps)
    h = (x - mu[:, None]) * rstd[:, None]
    g = dy * w.astype(np.float64) if w is not None else dy
    dx = rstd[:, None] * (g - g.mean(1, keepdims=True) - h * (g * h).mean(1, keepdims=True))
    return dx, (dy * h).sum(0), dy.sum(0)


def _ce_forward64(x, t, ignore, ls):
    x = x.astype(np.float64)
    m = x.max(1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(1, keepdims=True)))[:, 0]
    keep = t != ignore
    picked = np.where(keep, x[np.arange(len(t)), np.where(keep, t, 0)], 0.0)
    loss = np.where(keep, (1 - ls) * (lse - picked) + ls * (lse - x.mean(1)), 0.0)
    return loss, lse


def _ce_backward64(x, t, dloss, ignore, ls):
    x = x.astype(np.float64)
    _, lse = _ce_forward64(x, t, ignore, ls)
    c = x.shape[1]
    p = np.exp(x - lse[:, None])
    keep = t != ignore
    onehot = np.zeros_like(x)
    onehot[np.nonzero(keep)[0], t[keep]] = 1.0
    dx = dloss.astype(np.float64)[:, None] * (p - ls / c - (1 - ls) * onehot)
    return np.where(keep[:, None], dx, 0.0)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("has_w,has_b", [(True, True), (True, False), (False, True), (False, False)])
def test_layer_norm_matches_float64_formula(rng, dt, shape, has_w, has_b):
    n, d = shape
    x = (rng.standard_normal(shape) * 2 + 1).astype(dt)
    w = rng.standard_normal(d).astype(dt) if has_w else None
    b = rng.standard_normal(d).astype(dt) if has_b else None
    y, mean, rstd = ln.layer_norm_forward(x, w, b, 1e-5)
    assert y.dtype == mean.dtype == rstd.dtype == dt
    for got, want in zip((y, mean, rstd), _ln_forward64(x, w, b, 1e-5)):
        np.testing.assert_allclose(got, want, **_tol(dt))
    dy = rng.standard_normal(shape).astype(dt)
    dx, dw, db = ln.layer_norm_backward(dy, x, w, mean, rstd)
    rdx, rdw, rdb = _ln_backward64(dy, x, w, 1e-5)
    assert dx.dtype == db.dtype == dt
    tol = _tol(dt)
    np.testing.assert_allclose(dx, rdx, rtol=tol["rtol"], atol=tol["atol"] * 10)
    np.testing.assert_allclose(db, rdb, rtol=tol["rtol"], atol=tol["atol"] * n)
    if has_w:
        assert dw.dtype == dt
        np.testing.assert_allclose(dw, rdw, rtol=tol["rtol"], atol=tol["atol"] * n)
    else:
        assert dw is None


def test_layer_norm_float32_rows_far_from_zero(rng):
    """Rows whose mean is large against their spread: the float32 two-pass moments stay close."""
    x = (rng.standard_normal((64, 256)) + 300.0).astype(np.float32)
    y, mean, rstd = ln.layer_norm_forward(x, None, None, 1e-5)
    ry, rmean, rrstd = _ln_forward64(x, None, None, 1e-5)
    np.testing.assert_allclose(mean, rmean, rtol=1e-6)
    np.testing.assert_allclose(rstd, rrstd, rtol=2e-3)
    np.testing.assert_allclose(y, ry, atol=5e-3)


@pytest.mark.parametrize("bad", ["strided", "dtype", "shape"])
def test_layer_norm_rejects_bad_arrays(bad):
    x = np.zeros((4, 6), np.float32)
    with pytest.raises((ValueError, TypeError)) as e:
        if bad == "strided":
            ln.layer_norm_forward(x[:, ::2], None, None, 1e-5)
        elif bad == "dtype":
            ln.layer_norm_forward(x.astype(np.int32), None, None, 1e-5)
        else:
            ln.layer_norm_forward(x, np.ones(5, np.float32), None, 1e-5)
    assert {"strided": "C-contiguous", "dtype": "int32", "shape": "(6,)"}[bad] in str(e.value)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 64), (9, 1), (5, 3), (257, 1031)])
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_cross_entropy_matches_float64_formula(rng, dt, shape, ls):
    n, c = shape
    x = (rng.standard_normal(shape) * 4).astype(dt)
    t = rng.integers(0, c, n)
    t[rng.random(n) < 0.25] = -100
    loss, lse = ce.cross_entropy_forward(x, t, -100, ls)
    assert loss.dtype == lse.dtype == dt
    rloss, rlse = _ce_forward64(x, t, -100, ls)
    np.testing.assert_allclose(loss, rloss, **_tol(dt))
    np.testing.assert_allclose(lse, rlse, **_tol(dt))
    dloss = rng.standard_normal(n).astype(dt)
    dx = ce.cross_entropy_backward(x, t, lse, dloss, -100, ls)
    assert dx.dtype == dt
    np.testing.assert_allclose(dx, _ce_backward64(x, t, dloss, -100, ls), **_tol(dt))


@pytest.mark.parametrize("target", [[0, 3], [-1, 0], [0, -101]])
def test_cross_entropy_rejects_out_of_range_targets_both_ways(target):
    x, t = np.zeros((2, 3), np.float32), np.array(target)
    with pytest.raises(IndexError, match=r"target out of range \[0, 3\)"):
        ce.cross_entropy_forward(x, t, -100, 0.0)
    with pytest.raises(IndexError, match=r"target out of range \[0, 3\)"):
        ce.cross_entropy_backward(x, t, np.zeros(2, np.float32), np.ones(2, np.float32), -100, 0.0)


def test_cross_entropy_ignore_index_inside_the_class_range(rng):
    """ignore_index may be a real class: those rows get no loss and no gradient."""
    x = rng.standard_normal((6, 4))
    t = np.array([0, 1, 2, 3, 1, 1])
    loss, lse = ce.cross_entropy_forward(x, t, 1, 0.1)
    rloss, _ = _ce_forward64(x, t, 1, 0.1)
    np.testing.assert_allclose(loss, rloss, rtol=1e-12)
    assert np.all(loss[t == 1] == 0)
    dx = ce.cross_entropy_backward(x, t, lse, np.ones(6), 1, 0.1)
    assert np.all(dx[t == 1] == 0)
    np.testing.assert_allclose(dx, _ce_backward64(x, t, np.ones(6), 1, 0.1), rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ serial and threaded: the same bits
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [1, 63, 64, 65, 517])
def test_layer_norm_serial_and_threaded_versions_agree_bitwise(rng, dt, n):
    d = 131
    x = (rng.standard_normal((n, d)) * 3 - 1).astype(dt)
    w, b = rng.standard_normal(d).astype(dt), rng.standard_normal(d).astype(dt)
    outs = []
    for kernel, tasks in [(ln._ln_fwd.serial, 1), (ln._ln_fwd.threaded, 1), (ln._ln_fwd.threaded, min(n, 7))]:
        y, mean, rstd = np.empty_like(x), np.empty(n, dt), np.empty(n, dt)
        kernel(x, w, b, True, True, 1e-5, y, mean, rstd, tasks)
        outs.append((y, mean, rstd))
    for other in outs[1:]:
        for a, c in zip(outs[0], other):
            assert np.array_equal(a, c)
    y, mean, rstd = outs[0]
    dy = rng.standard_normal((n, d)).astype(dt)
    grads = []
    for kernel in (ln._ln_bwd.serial, ln._ln_bwd.threaded):
        chunks = -(-n // ln.ROWS_PER_CHUNK)
        dx, dw, db = np.empty_like(x), np.empty(d, dt), np.empty(d, dt)
        kernel(dy, x, w, True, mean, rstd, dx, np.empty((chunks, d), dt), np.empty((chunks, d), dt), dw, db)
        grads.append((dx, dw, db))
    for a, c in zip(*grads):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("dt", DTYPES)
def test_cross_entropy_serial_and_threaded_versions_agree_bitwise(rng, dt):
    n, c = 203, 67
    x = (rng.standard_normal((n, c)) * 3).astype(dt)
    t = rng.integers(0, c, n)
    t[::5] = -100
    dloss = rng.standard_normal(n).astype(dt)
    fwd, bwd = [], []
    for kf, kb, tasks in [(ce._ce_fwd.serial, ce._ce_bwd.serial, 1), (ce._ce_fwd.threaded, ce._ce_bwd.threaded, 1),
                          (ce._ce_fwd.threaded, ce._ce_bwd.threaded, 9)]:
        loss, lse = np.empty(n, dt), np.empty(n, dt)
        assert kf(x, t, -100, 0.1, loss, lse, tasks) == 0
        dx = np.empty_like(x)
        assert kb(x, t, lse, dloss, -100, 0.1, dx, tasks) == 0
        fwd.append((loss, lse))
        bwd.append(dx)
    for k in (1, 2):
        assert all(np.array_equal(a, c) for a, c in zip(fwd[0], fwd[k]))
        assert np.array_equal(bwd[0], bwd[k])


_ONE_VS_TWO_THREADS = textwrap.dedent("""
    import hashlib, numba, numpy as np
    from minitrans.kernels.cpu import cross_entropy as ce, layer_norm as ln, parallel
    parallel.THREADED_MIN_ELEMENTS = 1          # every call takes the threaded version with 2 threads
    rng = np.random.default_rng(5)
    x = rng.standard_normal((777, 96)).astype(np.float32)
    w, b = rng.standard_normal(96).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(-1, 96, 777)
    for threads in (1, 2):
        numba.set_num_threads(threads)
        assert parallel.row_tasks(777, x.size) == (0 if threads == 1 else 8)
        y, mean, rstd = ln.layer_norm_forward(x, w, b, 1e-5)
        outs = [y, mean, rstd, *ln.layer_norm_backward(dy, x, w, mean, rstd)]
        loss, lse = ce.cross_entropy_forward(x, t, -1, 0.1)
        outs += [loss, lse, ce.cross_entropy_backward(x, t, lse, mean, -1, 0.1)]
        print(hashlib.sha256(b"".join(o.tobytes() for o in outs)).hexdigest())
""")


def test_one_and_two_threads_give_the_same_bits():
    """In a fresh process with a pool of two: LayerNorm and cross-entropy, forward and backward,
    on one thread (serial versions) and two (threaded versions) hash the same."""
    env = dict(os.environ, NUMBA_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _ONE_VS_TWO_THREADS], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    one, two = out.stdout.split()
    assert one == two
