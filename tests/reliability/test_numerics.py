"""Numerical edge cases: huge logits stay finite, fully masked attention rows are zeros, and
``detect_anomaly`` stops at the first op that makes a NaN/Inf, naming it and the user's line.
Every test runs on each device of the ``device`` fixture (cpu, and cuda under Numba's simulator)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
import minitrans.nn.functional as F

BIG = 1e4


@pytest.fixture(params=["numba", "reference"])
def kernels(request):
    """Run the test once with the Numba kernels and once with the NumPy reference kernels."""
    prev = mt.get_kernels()
    mt.set_kernels(request.param)
    yield request.param
    mt.set_kernels(prev)


def huge_logits(shape, seed=0, device="cpu"):
    """float32 logits drawn from {−1e4, −5e3, 0, 5e3, 1e4}: exp overflows unless the op is stable."""
    rng = np.random.default_rng(seed)
    return mt.tensor(rng.choice([-BIG, -BIG / 2, 0.0, BIG / 2, BIG], size=shape).astype(np.float32),
                     device=device, requires_grad=True)


def log_softmax_ref(x: np.ndarray, axis=-1) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def assert_finite(*tensors):
    for t in tensors:
        assert t is not None
        assert np.isfinite(t.numpy()).all(), f"non-finite values in {t.numpy()}"


# ----------------------------------------------------------------------------- huge logits
@pytest.mark.parametrize("dim", [-1, 0])
def test_softmax_and_log_softmax_finite_for_huge_logits(device, kernels, dim):
    x = huge_logits((5, 7), device=device)
    w = mt.randn(5, 7, device=device)
    for f in (F.softmax, F.log_softmax):
        x.grad = None
        y = f(x, dim)
        (y * w).sum().backward()
        assert_finite(y, x.grad)
    np.testing.assert_allclose(F.log_softmax(x, dim).numpy(), log_softmax_ref(x.numpy(), dim), rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(F.softmax(x, dim).numpy(), np.exp(log_softmax_ref(x.numpy(), dim)), atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_finite_for_huge_logits(device, kernels, reduction, label_smoothing):
    x = huge_logits((6, 5), seed=1, device=device)
    # each target is the row's smallest logit: p ≈ exp(−2e4) underflows to 0, log p must not be −inf
    target = mt.tensor(x.numpy().argmin(axis=1), device=device)
    loss = F.cross_entropy(x, target, reduction=reduction, label_smoothing=label_smoothing)
    (loss.sum() if reduction == "none" else loss).backward()
    assert_finite(loss, x.grad)
    lsm = log_softmax_ref(x.numpy())
    per_row = -(1 - label_smoothing) * lsm[np.arange(6), target.numpy()] - label_smoothing * lsm.mean(axis=1)
    expect = {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]
    np.testing.assert_allclose(loss.numpy(), expect, rtol=1e-5)
    assert np.abs(x.grad.numpy()).max() <= 1.0 + 1e-6  # softmax − onehot is bounded by 1 (per row)


def test_cross_entropy_with_ignore_index_and_huge_logits(device, kernels):
    x = huge_logits((4, 3), seed=2, device=device)
    target = mt.tensor([0, -100, 2, -100], device=device)
    loss = F.cross_entropy(x, target)
    loss.backward()
    assert_finite(loss, x.grad)
    np.testing.assert_array_equal(x.grad.numpy()[[1, 3]], 0.0)


@pytest.mark.parametrize("fused", [True, False])
def test_attention_finite_for_huge_scores(device, kernels, fused):
    rng = np.random.default_rng(3)
    q = mt.tensor(rng.standard_normal((2, 6, 4)).astype(np.float32), device=device, requires_grad=True)
    k = mt.tensor(rng.standard_normal((2, 6, 4)).astype(np.float32), device=device, requires_grad=True)
    v = mt.tensor(rng.standard_normal((2, 6, 4)).astype(np.float32), device=device, requires_grad=True)
    bias = huge_logits((6, 6), seed=4, device=device).detach()       # additive float mask of ±1e4
    o = F.scaled_dot_product_attention(q, k, v, bias, fused=fused)
    (o * mt.randn(2, 6, 4, device=device)).sum().backward()
    assert_finite(o, q.grad, k.grad, v.grad)
    s = (q.numpy().astype(np.float64) @ k.numpy().transpose(0, 2, 1)) / 2.0 + bias.numpy()
    ref = np.exp(log_softmax_ref(s)) @ v.numpy()
    # score + 1e4 in float32 keeps only ~1e-3 of the score (the spacing of float32 near 1e4)
    np.testing.assert_allclose(o.numpy(), ref, atol=2e-3)


# ----------------------------------------------------------------------------- fully masked rows
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_fully_masked_attention_row_gives_zeros(device, kernels, fused, causal):
    rng = np.random.default_rng(5)
    q, k, v = (mt.tensor(rng.standard_normal((2, 5, 4)) * 30, dtype=mt.float32, device=device, requires_grad=True)
               for _ in range(3))
    keep = np.ones((5, 5), bool)
    keep[2] = False                                   # query 2 may attend to nothing
    o = F.scaled_dot_product_attention(q, k, v, mt.tensor(keep, device=device), is_causal=causal, fused=fused)
    (o * mt.randn(2, 5, 4, device=device)).sum().backward()
    assert_finite(o, q.grad, k.grad, v.grad)
    np.testing.assert_array_equal(o.numpy()[:, 2], 0.0)
    np.testing.assert_array_equal(q.grad.numpy()[:, 2], 0.0)


def test_multihead_attention_with_all_keys_padded_gives_zeros_not_nan(device):
    mt.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    mha.to(device)
    x = mt.randn(2, 4, 8, device=device, requires_grad=True)
    pad = mt.tensor([[False, False, True, True], [True, True, True, True]], device=device)  # batch 1: every key padded
    for need_weights in (True, False):
        out, w = mha(x, x, x, key_padding_mask=pad, need_weights=need_weights)
        out.sum().backward()
        assert_finite(out, x.grad, *(p.grad for p in mha.parameters()))
        # with no key to attend to, the attention output is 0 and the layer returns out_proj's bias
        np.testing.assert_allclose(out.numpy()[1], np.broadcast_to(mha.out_proj.bias.numpy(), (4, 8)), atol=1e-6)
        if need_weights:
            np.testing.assert_array_equal(w.numpy()[1], 0.0)
        x.grad = None
        mha.zero_grad()


# ----------------------------------------------------------------------------- anomaly detection
def _line_of(marker: str) -> int:
    """The line number in this file holding ``marker`` (so tests need not hard-code numbers)."""
    with open(__file__) as f:
        for i, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return i
    raise AssertionError(marker)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_detect_anomaly_forward_names_the_op_and_the_users_line(device):
    x = mt.tensor([1.0, 0.0], device=device, requires_grad=True)
    with mt.autograd.detect_anomaly(), pytest.raises(RuntimeError) as info:
        y = x * 2.0
        y.log()  # ANOMALY-FORWARD
    msg = str(info.value)
    assert "'Log'" in msg and "forward" in msg
    assert f"{__file__}:{_line_of('# ANOMALY-FORWARD')}" in msg


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_detect_anomaly_backward_stops_at_the_first_bad_op(device):
    x = mt.tensor([2.0, 3.0], device=device, requires_grad=True)
    with mt.autograd.detect_anomaly():
        u = x - x                    # zeros; its backward would also see the inf, but it runs later
        v = u.sqrt()  # ANOMALY-BACKWARD
        loss = (v * 2.0).sum()
        with pytest.raises(RuntimeError) as info:
            loss.backward()
    msg = str(info.value)
    assert "'SqrtBackward'" in msg and "Sub" not in msg.split("created at")[0]
    assert f"{__file__}:{_line_of('# ANOMALY-BACKWARD')}" in msg
    assert x.grad is None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_detect_anomaly_inside_a_layer_points_at_the_users_call(device):
    layer = nn.Linear(3, 2)
    layer.to(device)
    with mt.no_grad():
        layer.weight.fill_(float("inf"))
    x = mt.randn(4, 3, device=device)
    with mt.autograd.detect_anomaly(), pytest.raises(RuntimeError) as info:
        layer(x)  # ANOMALY-LAYER
    msg = str(info.value)
    assert "'Linear'" in msg
    # the first location given is the user's line, not a frame inside minitrans
    assert msg.split("called at:\n")[1].splitlines()[0].strip().startswith(f"{__file__}:{_line_of('# ANOMALY-LAYER')}")


def test_detect_anomaly_records_no_trace_when_off(device):
    y = mt.tensor([1.0], device=device, requires_grad=True) * 2.0
    assert not hasattr(y.grad_fn, "_trace")
