"""The feed-forward block's fused Linear + ReLU (``ops.linalg.LinearRelu``): taken only where nothing
can tell, the same values and gradients as the unfused layers bit for bit, float64 gradcheck, and the
same results on one thread as on two."""
from __future__ import annotations

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn.functional as F
from minitrans import nn, threads
from minitrans.kernels.cpu import linear_act
from minitrans.kernels.cpu import matmul as mm
from minitrans.nn.transformer import feed_forward
from minitrans.ops import linalg


def _unfused(ff, x):
    return ff.linear2(ff.dropout(F.relu(ff.linear1(x))))


def _run(f, ff, x_np, device="cpu"):
    """f(ff, x)'s output and the gradients of sum(out * weights) for x and every parameter, as NumPy."""
    x = mt.tensor(x_np, device=device, requires_grad=True)
    for p in ff.parameters():
        p.grad = None
    out = f(ff, x)
    weights = np.cos(np.arange(out.numel())).reshape(out.shape).astype(x_np.dtype)
    (out * mt.tensor(weights, device=device)).sum().backward()
    return [out.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in ff.parameters()]


@pytest.fixture
def count_fused(monkeypatch):
    calls = []
    real = linalg.LinearRelu.apply.__func__

    def counting(cls, *args):
        calls.append(cls)
        return real(cls, *args)

    monkeypatch.setattr(linalg.LinearRelu, "apply", classmethod(counting))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 6), (3, 5, 6), (2, 1, 6)])
def test_fused_block_gives_the_unfused_values_and_gradients_bit_for_bit(device, count_fused, dtype, shape):
    mt.manual_seed(3)
    ff = nn.FeedForward(6, 11).to(device)
    if dtype == np.float64:
        ff = ff.double()
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    x.reshape(-1, 6)[0] = -10.0                         # a row all of whose ReLU inputs are negative
    got = _run(lambda m, t: m(t), ff, x, device)
    assert len(count_fused) == 1
    want = _run(_unfused, ff, x, device)
    assert len(count_fused) == 1
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, w)
    # and against float64 NumPy formulas written here
    W1, b1, W2, b2 = (p.numpy().astype(np.float64) for p in ff.parameters())
    h = np.maximum(x.astype(np.float64) @ W1.T + b1, 0)
    np.testing.assert_allclose(got[0], h @ W2.T + b2, rtol=1e-5, atol=1e-5)
    gout = np.cos(np.arange(got[0].size)).reshape(got[0].shape)
    gpre = (gout @ W2) * (h > 0)
    np.testing.assert_allclose(got[1], gpre @ W1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[2], gpre.reshape(-1, 11).T @ x.reshape(-1, 6), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[3], gpre.reshape(-1, 11).sum(0), rtol=1e-4, atol=1e-5)


def test_fused_block_passes_float64_gradcheck():
    mt.manual_seed(0)
    ff = nn.FeedForward(4, 7).double()
    x = mt.tensor(np.random.default_rng(2).standard_normal((2, 3, 4)), requires_grad=True)
    assert mt.autograd.gradcheck(lambda x, w1, b1, w2, b2: ff(x), [x, *ff.parameters()])
    no_bias = nn.Linear(4, 7, bias=False).double()
    fn = lambda x, w: linalg.LinearRelu.apply(x, w, None)   # noqa: E731
    assert mt.autograd.gradcheck(fn, [x, no_bias.weight])


def test_relu_gradient_at_exactly_zero_is_zero_as_in_pytorch(device):
    w = mt.tensor(np.zeros((3, 2)), device=device, requires_grad=True)
    b = mt.tensor(np.array([0.0, 1.0, -1.0]), device=device, requires_grad=True)
    x = mt.tensor(np.ones((4, 2)), device=device, requires_grad=True)
    linalg.LinearRelu.apply(x, w, b).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), [0.0, 4.0, 0.0])
    np.testing.assert_array_equal(w.grad.numpy(), [[0, 0], [4, 4], [0, 0]])


def test_without_a_bias_on_every_device(device):
    rng = np.random.default_rng(8)
    x_np, w_np, g_np = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal((5, 4))
    x = mt.tensor(x_np, device=device, requires_grad=True)
    w = mt.tensor(w_np, device=device, requires_grad=True)
    out = linalg.LinearRelu.apply(x, w, None)
    (out * mt.tensor(g_np, device=device)).sum().backward()
    h = x_np @ w_np.T
    np.testing.assert_allclose(out.numpy(), np.maximum(h, 0), rtol=1e-12, atol=1e-12)
    gp = g_np * (h > 0)
    np.testing.assert_allclose(x.grad.numpy(), gp @ w_np, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), gp.T @ x_np, rtol=1e-12, atol=1e-12)


def _hooked(ff):
    ff.linear1.register_forward_hook(lambda m, a, out: None)
    return ff


@pytest.mark.parametrize("change", [
    lambda ff: setattr(ff.dropout, "p", 0.5),                     # dropout active
    lambda ff: setattr(ff, "activation", F.gelu),                 # another activation
    lambda ff: setattr(ff, "activation", nn.ReLU()),              # a module: it may carry hooks
    _hooked,                                                      # a hook must see linear1's output
])
def test_the_unfused_layers_run_where_the_difference_could_show(count_fused, change):
    ff = nn.FeedForward(4, 6)
    change(ff)
    ff(mt.tensor(np.ones((2, 4), np.float32)))
    assert count_fused == []


def test_dropout_in_eval_mode_is_fused_and_bad_input_gets_the_layers_own_errors(count_fused):
    ff = nn.FeedForward(4, 6, dropout=0.5).eval()
    ff(mt.tensor(np.ones((2, 4), np.float32)))
    assert len(count_fused) == 1
    with pytest.raises(RuntimeError, match="linear: input has dtype minitrans.float64 but weight has dtype minitrans.float32"):
        ff(mt.tensor(np.ones((2, 4))))
    with pytest.raises(ValueError, match=r"Linear\(in_features=4\) got input of shape \(2, 5\)"):
        ff(mt.tensor(np.ones((2, 5), np.float32)))
    assert len(count_fused) == 1


def test_the_feed_forward_function_fuses_for_the_encoder_layer(count_fused):
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    layer(mt.tensor(np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)))
    assert len(count_fused) == 1
    x = mt.tensor(np.ones((1, 8), np.float32))
    np.testing.assert_array_equal(feed_forward(x, layer.linear1, layer.linear2, F.relu, layer.dropout).numpy(),
                                  layer.linear2(F.relu(layer.linear1(x))).numpy())


def test_the_same_bits_on_one_thread_as_on_two(monkeypatch):
    """Two threads with every product and mask pass split (OpenBLAS on one thread): the fused
    block's output and gradients are the one-thread ones, bit for bit."""
    mt.manual_seed(5)
    ff = nn.FeedForward(64, 96)
    x = np.random.default_rng(7).standard_normal((4, 33, 64)).astype(np.float32)
    for module in (mm, linear_act):
        monkeypatch.setattr(module, "get_num_threads", lambda: 1)
    one = _run(lambda m, t: m(t), ff, x)
    for module in (mm, linear_act):
        monkeypatch.setattr(module, "get_num_threads", lambda: 2)
    monkeypatch.setattr(mm, "MIN_FLOPS", 0)
    monkeypatch.setattr(linear_act, "MIN_SIZE", 0)
    monkeypatch.setattr(linear_act, "MIN_COLUMNS_PER_TASK", 1)
    with threads.limit_blas_threads(1):
        two = _run(lambda m, t: m(t), ff, x)
    for a, b in zip(one[1:], two[1:]):            # every gradient: whole products on both counts
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(one[0], two[0], rtol=1e-6, atol=1e-6)   # the forward: its rows split on two threads
