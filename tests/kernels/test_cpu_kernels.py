"""CPU (Numba) kernels against the NumPy reference, and the reference against independent
formulations (hand-composed softmax, naive -log p, float64 central differences,
hand-unrolled Adam). Every test draws fresh random inputs.

Tolerances: float64 kernels must match to ~1e-10; float32 kernels accumulate in float32
(with a polynomial exp of relative error ~2e-7), so they get rtol 2e-4 / atol 2e-5.
"""
import warnings

import numpy as np
import pytest

from minitrans.kernels import cpu, reference as ref
from minitrans.kernels.cpu import attention as cpu_attention

DTYPES = [np.float32, np.float64]


def tol(dt):
    return dict(rtol=2e-4, atol=2e-5) if dt == np.float32 else dict(rtol=1e-9, atol=1e-10)


@pytest.fixture
def rng():
    # fresh inputs on every run; the seed is printed, so pytest shows it for a failure
    seed = np.random.SeedSequence().entropy
    print(f"rng seed: {seed}")
    return np.random.default_rng(seed)


def central_diff(f, x, eps=1e-6):
    """d f / d x by float64 central differences, f: array -> float."""
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + eps
        fp = f(x)
        x[idx] = old - eps
        fm = f(x)
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


# =================================================================== reference self-checks
def test_reference_softmax_forward_and_backward(rng):
    x = rng.standard_normal((4, 7)) * 3
    y = ref.softmax_forward(x)
    naive = np.array([[np.exp(v) / np.exp(r).sum() for v in r] for r in x])
    np.testing.assert_allclose(y, naive, rtol=1e-12)
    np.testing.assert_allclose(ref.log_softmax_forward(x), np.log(naive), rtol=1e-12, atol=1e-12)
    w = rng.standard_normal(x.shape)
    fd = central_diff(lambda a: float((w * ref.softmax_forward(a)).sum()), x.copy())
    np.testing.assert_allclose(ref.softmax_backward(y, w), fd, rtol=1e-6, atol=1e-8)
    fd = central_diff(lambda a: float((w * ref.log_softmax_forward(a)).sum()), x.copy())
    np.testing.assert_allclose(ref.log_softmax_backward(ref.log_softmax_forward(x), w), fd,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_reference_cross_entropy(rng, ls):
    n, c, ignore = 6, 5, -100
    x = rng.standard_normal((n, c)) * 2
    t = rng.integers(0, c, n)
    t[2] = ignore
    loss, lse = ref.cross_entropy_forward(x, t, ignore, ls)
    logp = np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True))
    for i in range(n):
        want = 0.0 if t[i] == ignore else -(1 - ls) * logp[i, t[i]] - ls * logp[i].mean()
        assert loss[i] == pytest.approx(want, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(lse, np.log(np.exp(x).sum(1)), rtol=1e-12)
    dloss = rng.standard_normal(n)
    fd = central_diff(lambda a: float((dloss * ref.cross_entropy_forward(a, t, ignore, ls)[0]).sum()),
                      x.copy())
    got = ref.cross_entropy_backward(x, t, lse, dloss, ignore, ls)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)
    assert np.all(got[2] == 0)


@pytest.mark.parametrize("affine", [True, False])
def test_reference_layer_norm(rng, affine):
    n, d, eps = 4, 6, 1e-5
    x = rng.standard_normal((n, d))
    w = rng.standard_normal(d) if affine else None
    b = rng.standard_normal(d) if affine else None
    y, mean, rstd = ref.layer_norm_forward(x, w, b, eps)
    xhat = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)
    np.testing.assert_allclose(y, xhat * w + b if affine else xhat, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal((n, d))
    dx, dw, db = ref.layer_norm_backward(dy, x, w, mean, rstd)

    def loss(x_=x, w_=w, b_=b):
        return float((dy * ref.layer_norm_forward(x_, w_, b_, eps)[0]).sum())
    np.testing.assert_allclose(dx, central_diff(lambda a: loss(x_=a), x.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-12)
    if affine:
        np.testing.assert_allclose(dw, central_diff(lambda a: loss(w_=a), w.copy()), rtol=1e-6, atol=1e-8)
    else:
        assert dw is None


def _naive_attention(q, k, v, bias, causal, scale):
    """Loops over batch and rows, softmax composed by hand; fully masked rows -> 0."""
    B, Tq, _ = q.shape
    o = np.zeros((B, Tq, v.shape[2]))
    for b in range(B):
        for i in range(Tq):
            s = scale * k[b] @ q[b, i] + (0 if bias is None else bias[b, i])
            if causal:
                s[i + 1:] = -np.inf
            if np.all(np.isneginf(s)):
                continue
            e = np.exp(s - s.max())
            o[b, i] = (e / e.sum()) @ v[b]
    return o


@pytest.mark.parametrize("causal", [False, True])
def test_reference_attention(rng, causal):
    B, Tq, Tk, d, dv = 2, 5, 6, 3, 4
    q, k, v = rng.standard_normal((B, Tq, d)), rng.standard_normal((B, Tk, d)), rng.standard_normal((B, Tk, dv))
    bias = rng.standard_normal((B, Tq, Tk))
    bias[rng.random(bias.shape) < 0.2] = -np.inf
    bias[1, 3, :] = -np.inf                               # one fully masked row
    scale = 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        o, lse = ref.attention_forward(q, k, v, bias, causal, scale)
        np.testing.assert_allclose(o, _naive_attention(q, k, v, bias, causal, scale), rtol=1e-12, atol=1e-12)
        assert lse[1, 3] == -np.inf and np.all(o[1, 3] == 0)
        do = rng.standard_normal(o.shape)
        grads = ref.attention_backward(q, k, v, o, lse, do, bias, causal, scale)
    args = [q, k, v]
    for which in range(3):
        def f(a, which=which):
            xs = list(args)
            xs[which] = a
            return float((do * ref.attention_forward(*xs, bias, causal, scale)[0]).sum())
        fd = central_diff(f, args[which].copy())
        np.testing.assert_allclose(grads[which], fd, rtol=1e-6, atol=1e-8)
    assert np.all(grads[0][1, 3] == 0)


@pytest.mark.parametrize("decoupled", [False, True])
def test_reference_adam_three_steps(rng, decoupled):
    n = 5
    p = rng.standard_normal(n)
    m, v = np.zeros(n), np.zeros(n)
    lr, b1, b2, eps, wd = 0.01, 0.8, 0.95, 1e-6, 0.1
    grads = [rng.standard_normal(n) for _ in range(3)]
    want = p.copy()
    for i in range(n):                                    # hand-unrolled, one element at a time
        pi, mi, vi = want[i], 0.0, 0.0
        for step, g in enumerate(grads, start=1):
            gi = g[i]
            if decoupled:
                pi = pi - lr * wd * pi
            else:
                gi = gi + wd * pi
            mi = b1 * mi + (1 - b1) * gi
            vi = b2 * vi + (1 - b2) * gi ** 2
            mhat, vhat = mi / (1 - b1 ** step), vi / (1 - b2 ** step)
            pi = pi - lr * mhat / (vhat ** 0.5 + eps)
        want[i] = pi
    for step, g in enumerate(grads, start=1):
        ref.adam_step(p, g, m, v, lr, b1, b2, eps, wd, step, decoupled)
    np.testing.assert_allclose(p, want, rtol=1e-12)


# ======================================================================= CPU vs reference
ROW_SHAPES = [(1, 1), (3, 7), (65, 1000), (17, 4099)]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_softmax_family(rng, dt, shape):
    x = (rng.standard_normal(shape) * 4).astype(dt)
    if shape[1] > 3:
        x[rng.random(shape) < 0.05] = -np.inf               # masked entries, never a whole row
        x[:, 0] = rng.standard_normal(shape[0])
    dy = rng.standard_normal(shape).astype(dt)
    y = cpu.softmax_forward(x)
    assert y.dtype == dt
    np.testing.assert_allclose(y, ref.softmax_forward(x), **tol(dt))
    np.testing.assert_allclose(cpu.softmax_backward(y, dy), ref.softmax_backward(y, dy), **tol(dt))
    ly = cpu.log_softmax_forward(x)
    rly = ref.log_softmax_forward(x)
    assert np.array_equal(np.isneginf(ly), np.isneginf(rly))
    fin = np.isfinite(rly)
    np.testing.assert_allclose(ly[fin], rly[fin], **tol(dt))
    np.testing.assert_allclose(cpu.log_softmax_backward(rly, dy), ref.log_softmax_backward(rly, dy), **tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (9, 5), (300, 1031)])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_cross_entropy(rng, dt, shape, ls):
    n, c = shape
    x = (rng.standard_normal(shape) * 3).astype(dt)
    t = rng.integers(0, c, n)
    t[rng.random(n) < 0.3] = -100
    loss, lse = cpu.cross_entropy_forward(x, t, -100, ls)
    rloss, rlse = ref.cross_entropy_forward(x, t, -100, ls)
    assert loss.dtype == dt and lse.dtype == dt
    np.testing.assert_allclose(loss, rloss, **tol(dt))
    np.testing.assert_allclose(lse, rlse, **tol(dt))
    dloss = rng.standard_normal(n).astype(dt)
    np.testing.assert_allclose(cpu.cross_entropy_backward(x, t, lse, dloss, -100, ls),
                               ref.cross_entropy_backward(x, t, rlse, dloss, -100, ls), **tol(dt))


def test_cross_entropy_rejects_bad_target():
    with pytest.raises(IndexError):
        cpu.cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3]), -100, 0.0)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (300, 129)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(rng, dt, shape, affine):
    n, d = shape
    x = (rng.standard_normal(shape) * 2 + 1).astype(dt)
    w = rng.standard_normal(d).astype(dt) if affine else None
    b = rng.standard_normal(d).astype(dt) if affine else None
    got, want = cpu.layer_norm_forward(x, w, b, 1e-5), ref.layer_norm_forward(x, w, b, 1e-5)
    for g, r in zip(got, want):
        assert g.dtype == dt
        np.testing.assert_allclose(g, r, **tol(dt))
    dy = rng.standard_normal(shape).astype(dt)
    got = cpu.layer_norm_backward(dy, x, w, want[1], want[2])
    want = ref.layer_norm_backward(dy, x, w, want[1], want[2])
    for g, r in zip(got, want):
        if r is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, r, rtol=tol(dt)["rtol"], atol=tol(dt)["atol"] * n)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step(rng, dt, decoupled):
    n = 1001
    bufs = [rng.standard_normal(n).astype(dt), np.zeros(n, dt), np.zeros(n, dt)]
    rbufs = [a.copy() for a in bufs]
    for step in range(1, 4):
        g = rng.standard_normal(n).astype(dt)
        cpu.adam_step(bufs[0], g, bufs[1], bufs[2], 1e-2, 0.9, 0.999, 1e-8, 0.05, step, decoupled)
        ref.adam_step(rbufs[0], g, rbufs[1], rbufs[2], 1e-2, 0.9, 0.999, 1e-8, 0.05, step, decoupled)
    for a, r in zip(bufs, rbufs):
        np.testing.assert_allclose(a, r, **tol(dt))


# ---------------------------------------------------------------------------- attention
# (B, Tq, Tk, d, dv, causal, bias kind)
ATTN_CASES = [
    (1, 1, 1, 8, 8, False, None),
    (2, 37, 53, 16, 24, False, None),
    (1, 300, 700, 32, 16, True, None),        # Tq < Tk, causal
    (2, 600, 300, 8, 8, True, "pad"),         # Tq > Tk, key padding via a zero-stride view
    (1, 5, 1100, 8, 8, False, "full"),        # full random bias with -inf, masked rows
    (3, 257, 513, 64, 32, True, "full"),
    (2, 40, 30, 4, 4, False, "allpad"),       # one batch entirely masked
]


def _make_bias(rng, kind, B, Tq, Tk):
    if kind is None:
        return None
    if kind in ("pad", "allpad"):
        pad = np.zeros((B, 1, Tk))
        pad[:, :, Tk - Tk // 5:] = -np.inf
        if kind == "allpad":
            pad[1] = -np.inf
        return np.broadcast_to(pad, (B, Tq, Tk))
    bias = rng.standard_normal((B, Tq, Tk))
    bias[rng.random(bias.shape) < 0.3] = -np.inf
    bias[0, Tq // 2, :] = -np.inf
    return bias


@pytest.mark.parametrize("blocks", ["default", "small", "short-path"])
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("case", ATTN_CASES)
def test_attention(rng, monkeypatch, blocks, dt, case):
    # "default"/"small": the tiled path whatever the size; "short-path": the one-kernel
    # path for short sequences (attention_small.py) whatever the size
    monkeypatch.setattr(cpu_attention, "SMALL_T", 10**9 if blocks == "short-path" else 0)
    if blocks == "small":                      # many ragged tiles on small shapes
        monkeypatch.setattr(cpu_attention, "BLOCK_Q", 16)
        monkeypatch.setattr(cpu_attention, "BLOCK_K", 24)
    B, Tq, Tk, d, dv, causal, kind = case
    q = rng.standard_normal((B, Tq, d)).astype(dt)
    k = rng.standard_normal((B, Tk, d)).astype(dt)
    v = rng.standard_normal((B, Tk, dv)).astype(dt)
    do = rng.standard_normal((B, Tq, dv)).astype(dt)
    bias = _make_bias(rng, kind, B, Tq, Tk)
    scale = 1.0 / np.sqrt(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no RuntimeWarning may leak, from either side
        o, lse = cpu.attention_forward(q, k, v, bias, causal, scale)
        ro, rlse = ref.attention_forward(q, k, v, bias, causal, scale)
        assert o.dtype == dt and lse.dtype == dt
        assert not np.isnan(o).any() and not np.isnan(lse).any()
        np.testing.assert_allclose(o, ro, **tol(dt))
        assert np.array_equal(np.isneginf(lse), np.isneginf(rlse))
        fin = np.isfinite(rlse)
        np.testing.assert_allclose(lse[fin], rlse[fin], **tol(dt))
        grads = cpu.attention_backward(q, k, v, o, lse, do, bias, causal, scale)
        rgrads = ref.attention_backward(q, k, v, ro, rlse, do, bias, causal, scale)
    for g, r in zip(grads, rgrads):
        assert g.dtype == dt and not np.isnan(g).any()
        np.testing.assert_allclose(g, r, **tol(dt))
    dead = np.isneginf(rlse)
    if dead.any():                                 # fully masked rows: o = 0 and dq = 0
        assert np.all(o[dead] == 0) and np.all(grads[0][dead] == 0)


def test_attention_rejects_non_contiguous():
    q = np.zeros((1, 4, 8), np.float32)
    with pytest.raises(ValueError):
        cpu.attention_forward(q[:, ::2], q[:, ::2], q[:, ::2], None, False, 1.0)
    with pytest.raises(ValueError):
        cpu.attention_forward(q, q, q, np.zeros((1, 4, 5)), False, 1.0)
