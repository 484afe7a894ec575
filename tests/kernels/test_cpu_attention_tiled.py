"""The CPU attention kernels' own code paths, against the float64 NumPy reference: the tiled
forward's shift by a stale running max and its fall-back, tile counts that do not divide n, the
one-pass exp, and the short-sequence row kernels' serial and threaded versions."""
import numpy as np
import pytest

from minitrans.kernels import cpu, reference as ref
from minitrans.kernels.cpu import attention as tiled
from minitrans.kernels.cpu import attention_small as small

DTYPES = [np.float32, np.float64]


def tol(dt):
    return dict(rtol=2e-4, atol=2e-5) if dt == np.float32 else dict(rtol=1e-9, atol=1e-10)


def check_against_reference(q, k, v, do, bias, causal, scale, grad_tol=None):
    dt = q.dtype
    o, lse = cpu.attention_forward(q, k, v, bias, causal, scale)
    want_o, want_lse = ref.attention_forward(q.astype(np.float64), k.astype(np.float64),
                                             v.astype(np.float64), bias, causal, scale)
    assert o.dtype == dt and lse.dtype == dt
    assert np.isfinite(o).all()
    np.testing.assert_allclose(o, want_o, **tol(dt))
    np.testing.assert_allclose(lse, want_lse, **tol(dt))
    grads = cpu.attention_backward(q, k, v, o, lse, do, bias, causal, scale)
    want = ref.attention_backward(*(a.astype(np.float64) for a in (q, k, v)), want_o, want_lse,
                                  do.astype(np.float64), bias, causal, scale)
    for g, w in zip(grads, want):
        assert g.dtype == dt and np.isfinite(g).all()
        np.testing.assert_allclose(g, w, **(grad_tol or tol(dt)))


@pytest.fixture
def tiles(monkeypatch):
    """Small tiles on the tiled path whatever the size, so that few rows make many tiles."""
    monkeypatch.setattr(tiled, "SMALL_T", 0)
    monkeypatch.setattr(tiled, "BLOCK_Q", 8)
    monkeypatch.setattr(tiled, "BLOCK_K", 16)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("growth", [0.5, 30.0])
def test_scores_growing_across_key_tiles(rng, tiles, dt, causal, growth):
    # key j's score for every query rises with j: by 0.5 per tile the stale running max is kept
    # (the sum stays below the limit); by 30 per tile it is exceeded and each row is redone with
    # its own max. Either way the result is the exact softmax, and nothing overflows.
    B, T, d = 2, 70, 4
    q = np.zeros((B, T, d))
    q[..., 0] = 1.0
    q += 0.01 * rng.standard_normal(q.shape)
    k = 0.01 * rng.standard_normal((B, T, d))
    k[..., 0] += growth * np.arange(T) / tiled.BLOCK_K
    v, do = rng.standard_normal((B, T, 3)), rng.standard_normal((B, T, 3))
    # float32 scores near 130 are rounded by ~1e-5 before the exp: the gradients get atol 1e-4
    grad_tol = dict(rtol=2e-4, atol=1e-4) if dt == np.float32 else None
    check_against_reference(*(a.astype(dt) for a in (q, k, v, do)), None, causal, 1.0, grad_tol)


@pytest.mark.parametrize("dt", DTYPES)
def test_stale_max_with_a_bias_that_masks_the_first_tiles(rng, tiles, dt):
    # a row whose first key tiles are all masked has no running max when a later tile comes:
    # it takes the ordinary two-pass path there, the others the one-pass one
    B, T, d = 1, 50, 8
    q, k, v, do = (rng.standard_normal((B, T, d)).astype(dt) for _ in range(4))
    bias = rng.standard_normal((B, T, T))
    bias[0, ::3, :40] = -np.inf
    check_against_reference(q, k, v, do, bias, False, 0.5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [129, 300, 513, 777])
def test_default_tiles_on_lengths_they_do_not_divide(rng, causal, n):
    # the real BLOCK_Q x BLOCK_K on lengths above the short-sequence path that leave ragged last tiles
    q, k, v, do = (rng.standard_normal((2, n, 16)).astype(np.float32) for _ in range(4))
    check_against_reference(q, k, v, do, None, causal, 0.25)


@pytest.mark.parametrize("dt", DTYPES)
def test_exp_matches_numpy_over_the_float_range(dt):
    from numba import njit

    @njit
    def exps(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = small.exp_scalar(x[i])
        return out

    x = np.concatenate([np.linspace(-80, 80, 2001), [0.0, -np.inf, -1e30]]).astype(dt)
    got, want = exps(x), np.exp(x.astype(np.float64))
    assert got.dtype == dt
    np.testing.assert_allclose(got, want, rtol=4e-7 if dt == np.float32 else 1e-14, atol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("has_bias", [False, True])
def test_short_path_row_kernels_serial_and_threaded_agree_bit_for_bit(rng, causal, has_bias):
    # the short path picks the serial version below a size; both must give the same bits
    B, T = 3, 40
    s = rng.standard_normal((B, T, T)).astype(np.float32) * 4
    dp = rng.standard_normal((B, T, T)).astype(np.float32)
    bias = rng.standard_normal((B, T, T)).astype(np.float32) if has_bias else np.zeros((1, 1, 1), np.float32)
    if has_bias:
        bias[0, 5] = -np.inf                       # one fully masked row
    o, do = rng.standard_normal((B, T, 8)).astype(np.float32), rng.standard_normal((B, T, 8)).astype(np.float32)
    scale, ninf = np.float32(0.3), np.float32(-np.inf)
    results = []
    for kernel, tasks in ((small._probs.serial, 1), (small._probs.threaded, 7)):
        p, lse = s.copy(), np.empty((B, T), np.float32)
        kernel(p, bias, has_bias, causal, scale, ninf, lse, tasks)
        results.append((p, lse))
    assert all(np.array_equal(a, b) for a, b in zip(*results))
    grads = []
    for kernel, tasks in ((small._dscores.serial, 1), (small._dscores.threaded, 7)):
        p, d = s.copy(), dp.copy()
        kernel(p, d, bias, has_bias, causal, scale, results[0][1], o, do, tasks)
        grads.append((p, d))
    assert all(np.array_equal(a, b) for a, b in zip(*grads))
