"""The CPU flash kernel's accumulating entry points, which ring attention is built on: the keys
split in blocks, each block merged into one output / added into one set of gradients in place,
equals the NumPy reference on all keys at once (no MPI needed)."""
import warnings

import numpy as np
import pytest

from minitrans.kernels import reference as ref
from minitrans.kernels.cpu import attention as cpu_attention

TOL = {np.float64: dict(rtol=1e-9, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-5)}


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_blocks_merged_in_place_equal_attention_on_all_keys(monkeypatch, tiles, dt, causal, masked):
    if tiles == "small":                           # many ragged tiles per block
        monkeypatch.setattr(cpu_attention, "BLOCK_Q", 16)
        monkeypatch.setattr(cpu_attention, "BLOCK_K", 24)
    rng = np.random.default_rng(3)
    B, T, d, dv, nblk = 2, 37, 8, 5, 3             # queries: the last of 3 blocks of T positions
    q = rng.standard_normal((B, T, d)).astype(dt)
    k = rng.standard_normal((B, nblk * T, d)).astype(dt)
    v = rng.standard_normal((B, nblk * T, dv)).astype(dt)
    do = rng.standard_normal((B, T, dv)).astype(dt)
    bias = None
    if masked:                                     # -inf entries; one row masked everywhere
        bias = np.where(rng.random((B, T, nblk * T)) < 0.3, -np.inf, 0.0).astype(dt)
        bias[1, 4] = -np.inf
        bias[0, 6, : 2 * T] = -np.inf               # masked in the first two blocks only
    # the reference: queries at positions 2T .. 3T-1, so causal masks only inside the last block
    full_bias = np.zeros((B, T, nblk * T)) if bias is None else bias.astype(np.float64)
    if causal:
        full_bias[:, :, 2 * T:][:, np.triu(np.ones((T, T), bool), 1)] = -np.inf
    ro, rlse = ref.attention_forward(q, k, v, full_bias.astype(dt), False, 0.3)
    rgrads = ref.attention_backward(q, k, v, ro, rlse, do, full_bias.astype(dt), False, 0.3)

    def block(a, j):
        return np.ascontiguousarray(a[:, j * T:(j + 1) * T])

    def block_bias(j):
        return None if bias is None else np.ascontiguousarray(bias[:, :, j * T:(j + 1) * T])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # forward: the diagonal block first (as ring attention does), then the others merged in
        order = [2, 0, 1]
        o, lse = cpu_attention.attention_forward(q, block(k, 2), block(v, 2), block_bias(2), causal, 0.3)
        for j in order[1:]:
            out = cpu_attention.attention_forward(q, block(k, j), block(v, j), block_bias(j), False, 0.3,
                                                  out=o, lse=lse)
            assert out[0] is o and out[1] is lse     # in place: the buffers given
        # also from the empty state (no key seen: out = 0, lse = -inf)
        o2, lse2 = np.zeros_like(o), np.full_like(lse, -np.inf)
        for j in order:
            cpu_attention.attention_forward(q, block(k, j), block(v, j), block_bias(j), causal and j == 2, 0.3,
                                            out=o2, lse=lse2)
        dq = np.zeros_like(q)
        dks, dvs = [], []
        for j in order:
            dk, dv = np.full_like(block(k, j), 0.5), np.full_like(block(v, j), -0.25)   # added into
            res = cpu_attention.attention_backward(q, block(k, j), block(v, j), o, lse, do, block_bias(j),
                                                   causal and j == 2, 0.3, dq=dq, dk=dk, dv=dv)
            assert res[0] is dq and res[1] is dk and res[2] is dv
            dks.append((j, dk - 0.5))
            dvs.append((j, dv + 0.25))
    for got, got_lse in ((o, lse), (o2, lse2)):
        np.testing.assert_allclose(got, ro, **TOL[dt])
        assert np.array_equal(np.isneginf(got_lse), np.isneginf(rlse))
        fin = np.isfinite(rlse)
        np.testing.assert_allclose(got_lse[fin], rlse[fin], **TOL[dt])
    if masked:
        assert np.isneginf(lse[1, 4]) and np.all(o[1, 4] == 0) and np.all(dq[1, 4] == 0)
    np.testing.assert_allclose(dq, rgrads[0], **TOL[dt])
    for j, dk in dks:
        np.testing.assert_allclose(dk, block(rgrads[1], j), **TOL[dt])
    for j, dv in dvs:
        np.testing.assert_allclose(dv, block(rgrads[2], j), **TOL[dt])


def test_accumulation_buffers_are_checked():
    q = np.ones((1, 4, 3))
    o, lse = cpu_attention.attention_forward(q, q, q, None, False, 1.0)
    with pytest.raises(ValueError, match=r"lse must be a C-contiguous \(1, 4\) float64 array, got \(1, 4\) float32"):
        cpu_attention.attention_forward(q, q, q, None, False, 1.0, out=o, lse=lse.astype(np.float32))
    with pytest.raises(ValueError, match="out must be a C-contiguous"):
        cpu_attention.attention_forward(q, q, q, None, False, 1.0, out=np.ones((1, 3, 4)).transpose(0, 2, 1),
                                        lse=lse)
    with pytest.raises(ValueError, match=r"dk must be a C-contiguous \(1, 4, 3\) float64 array, got NoneType"):
        cpu_attention.attention_backward(q, q, q, o, lse, q, None, False, 1.0, dq=np.zeros_like(q))
