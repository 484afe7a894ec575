"""Layers and their functional forms against NumPy formulas written here, with float64 gradcheck."""
import math

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
import minitrans.nn.functional as F
from helpers import check_op, rand


@pytest.fixture(params=["numba", "reference"])
def kernels(request):
    before = mt.get_kernels()
    mt.set_kernels(request.param)
    yield request.param
    mt.set_kernels(before)


# ----------------------------------------------------------------------------- softmax, log_softmax
def np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("shape,dim", [((5,), 0), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1), ((2, 1, 3), -1)])
def test_softmax_log_softmax(kernels, shape, dim):
    x = rand(np.random.default_rng(len(shape) * 10 + dim), shape, -3, 3)
    check_op(lambda a: F.softmax(a, dim=dim), lambda a: np.exp(np_log_softmax(a, dim)), [x], noncontig=True)
    check_op(lambda a: F.log_softmax(a, dim=dim), lambda a: np_log_softmax(a, dim), [x], noncontig=True)


def test_softmax_is_stable_for_large_logits():
    x = mt.tensor([[1000.0, 1001.0, 1002.0], [-1e4, 0.0, 1e4]], dtype=mt.float64)
    np.testing.assert_allclose(F.softmax(x, dim=-1).numpy(), np.exp(np_log_softmax(x.numpy(), -1)), atol=1e-15)
    assert np.isfinite(F.log_softmax(x, dim=-1).numpy()).all()


# ----------------------------------------------------------------------------- layer norm
def np_layer_norm(x, w, b, nd, eps=1e-5):
    axes = tuple(range(x.ndim - nd, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


@pytest.mark.parametrize("shape,ns", [((4, 5), (5,)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)), ((3, 1, 2, 3), (2, 3))])
def test_layer_norm(kernels, shape, ns):
    rng = np.random.default_rng(sum(shape))
    x, w, b = rand(rng, shape), rand(rng, ns, 0.5, 1.5), rand(rng, ns)
    check_op(lambda x, w, b: F.layer_norm(x, ns, w, b), lambda x, w, b: np_layer_norm(x, w, b, len(ns)),
             [x, w, b], noncontig=[0])
    check_op(lambda x: F.layer_norm(x, ns), lambda x: np_layer_norm(x, 1.0, 0.0, len(ns)), [x])


def test_layer_norm_module():
    m = nn.LayerNorm((2, 3)).double()
    assert np.all(m.weight.numpy() == 1) and np.all(m.bias.numpy() == 0)
    x = mt.tensor(rand(np.random.default_rng(0), (4, 2, 3)), requires_grad=True)
    np.testing.assert_allclose(m(x).numpy(), np_layer_norm(x.numpy(), 1.0, 0.0, 2), rtol=1e-10, atol=1e-12)
    assert mt.autograd.gradcheck(lambda x, w, b: m(x), [x, m.weight, m.bias])
    with pytest.raises(ValueError, match=r"\(4, 3, 2\)"):
        m(mt.zeros(4, 3, 2, dtype=mt.float64))


# ----------------------------------------------------------------------------- cross-entropy
def np_cross_entropy(x, t, ignore_index=-100, reduction="mean", ls=0.0):
    """PyTorch's formula, written independently: x (N, C, *), t (N, *)."""
    C = x.shape[1]
    x = np.moveaxis(x, 1, -1).reshape(-1, C)
    tf = t.reshape(-1)
    logp = np_log_softmax(x, -1)
    keep = tf != ignore_index
    picked = logp[np.arange(len(tf)), np.where(keep, tf, 0)]
    loss = -(1 - ls) * picked - ls / C * logp.sum(-1)
    loss = np.where(keep, loss, 0.0)
    if reduction == "none":
        return loss.reshape(t.shape)
    if reduction == "sum":
        return np.asarray(loss.sum())
    return np.asarray(loss.sum() / keep.sum())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("layout", ["NC", "NCd"])
def test_cross_entropy(kernels, reduction, ls, layout):
    rng = np.random.default_rng(7)
    shape, tshape = ((5, 4), (5,)) if layout == "NC" else ((2, 4, 3), (2, 3))
    x = rand(rng, shape, -3, 3)
    t = rng.integers(0, 4, size=tshape).astype(np.int64)
    t.reshape(-1)[1] = -100                                          # one ignored position
    check_op(lambda x, t: F.cross_entropy(x, t, reduction=reduction, label_smoothing=ls),
             lambda x, t: np_cross_entropy(x, t, reduction=reduction, ls=ls), [x, t])


def test_cross_entropy_custom_ignore_index():
    rng = np.random.default_rng(8)
    x = rand(rng, (6, 3))
    t = np.array([0, 2, 1, 2, 2, 0], np.int64)
    check_op(lambda x, t: F.cross_entropy(x, t, ignore_index=2),
             lambda x, t: np_cross_entropy(x, t, ignore_index=2), [x, t])


def test_cross_entropy_bad_target():
    x = mt.zeros(3, 4, dtype=mt.float64)
    with pytest.raises(IndexError, match="4"):
        F.cross_entropy(x, mt.tensor(np.array([0, 4, 1])))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        F.cross_entropy(x, mt.tensor(np.array([0, 1])))
    with pytest.raises(TypeError, match="int64"):
        F.cross_entropy(x, mt.tensor(np.array([0.0, 1.0, 2.0])))


# ----------------------------------------------------------------------------- embedding
def test_embedding_repeated_indices():
    rng = np.random.default_rng(9)
    w = rand(rng, (5, 3))
    idx = np.array([[1, 3, 1], [0, 1, 4]], np.int64)                # index 1 three times, 2 never
    check_op(lambda w, i: F.embedding(i, w), lambda w, i: w[i], [w, idx])


def test_embedding_padding_idx_gets_no_grad():
    rng = np.random.default_rng(10)
    emb = nn.Embedding(5, 3, padding_idx=2).double()
    assert np.all(emb.weight.numpy()[2] == 0), "the padding row starts at zero"
    idx = np.array([[2, 1, 2], [1, 4, 2]], np.int64)
    g = rng.standard_normal((2, 3, 3))
    out = emb(mt.tensor(idx))
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[idx])
    (out * mt.tensor(g)).sum().backward()
    want = np.zeros((5, 3))
    np.add.at(want, idx.reshape(-1), g.reshape(-1, 3))
    want[2] = 0.0
    np.testing.assert_allclose(emb.weight.grad.numpy(), want, rtol=1e-12, atol=1e-15)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        emb(mt.tensor(np.array([5], np.int64)))


# ----------------------------------------------------------------------------- linear
@pytest.mark.parametrize("xshape", [(3,), (4, 3), (2, 4, 3)])
def test_linear(xshape):
    rng = np.random.default_rng(11)
    x, W, b = rand(rng, xshape), rand(rng, (5, 3)), rand(rng, (5,))
    check_op(lambda x, W, b: F.linear(x, W, b), lambda x, W, b: x @ W.T + b, [x, W, b], noncontig=True)
    check_op(lambda x, W: F.linear(x, W), lambda x, W: x @ W.T, [x, W])


def test_linear_module_init_and_call():
    mt.manual_seed(0)
    lin = nn.Linear(16, 4)
    bound = 1 / math.sqrt(16)
    for p in (lin.weight, lin.bias):
        assert np.abs(p.numpy()).max() <= bound
    assert lin.weight.shape == (4, 16) and lin.bias.shape == (4,)
    lin.double()
    x = mt.tensor(rand(np.random.default_rng(0), (2, 16)), requires_grad=True)
    np.testing.assert_allclose(lin(x).numpy(), x.numpy() @ lin.weight.numpy().T + lin.bias.numpy(), rtol=1e-12)
    assert mt.autograd.gradcheck(lambda x, W, b: lin(x), [x, lin.weight, lin.bias])
    with pytest.raises(ValueError, match=r"in_features=16.*\(2, 5\)"):
        lin(mt.zeros(2, 5, dtype=mt.float64))
    assert nn.Linear(3, 2, bias=False).bias is None


# ----------------------------------------------------------------------------- dropout
def test_dropout_train_and_eval():
    p = 0.3
    mt.manual_seed(123)
    drop = nn.Dropout(p)
    x = mt.tensor(np.ones((200, 250)), requires_grad=True)
    y = drop(x).numpy()
    kept = y != 0
    frac = 1 - kept.mean()
    n = y.size
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n), f"dropped fraction {frac}, expected {p}"
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-12)         # survivors scaled by 1/(1-p)
    assert abs(y.mean() - 1.0) < 0.02                                      # expectation preserved
    # the gradient is the same mask and scale
    mt.manual_seed(123)
    out = drop(x)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), out.numpy())
    # eval: identity
    drop.eval()
    z = drop(x)
    np.testing.assert_array_equal(z.numpy(), x.numpy())
    # fixed seed: same mask
    drop.train()
    mt.manual_seed(5)
    a = drop(x).numpy()
    mt.manual_seed(5)
    np.testing.assert_array_equal(a, drop(x).numpy())


def test_dropout_edge_probabilities():
    x = mt.ones(4, 4)
    assert np.all(F.dropout(x, 1.0).numpy() == 0)
    assert F.dropout(x, 0.0) is x
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


# ----------------------------------------------------------------------------- positional encoding
def np_positional(T, d):
    pe = np.zeros((T, d))
    for t in range(T):
        for j in range(d):
            i2 = j - (j % 2)                                         # the even index 2i of the pair
            angle = t / 10000 ** (i2 / d)
            pe[t, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


@pytest.mark.parametrize("d", [8, 6, 5])
@pytest.mark.parametrize("batch_first", [True, False])
def test_positional_encoding_formula(d, batch_first):
    T, B = 7, 2
    pe_mod = nn.PositionalEncoding(d, max_len=50, batch_first=batch_first)
    x = rand(np.random.default_rng(d), (B, T, d) if batch_first else (T, B, d))
    out = pe_mod(mt.tensor(x)).numpy()
    want = np_positional(T, d)
    want = x + (want[None] if batch_first else want[:, None])
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-6)   # the table is stored in float32, as PyTorch's
    assert "pe" not in pe_mod.state_dict()                      # a non-persistent buffer


def test_positional_encoding_gradient_and_limits():
    pe_mod = nn.PositionalEncoding(4, max_len=5)
    x = mt.tensor(rand(np.random.default_rng(0), (2, 3, 4)), requires_grad=True)
    assert mt.autograd.gradcheck(pe_mod, [x])
    with pytest.raises(ValueError, match="max_len=5"):
        pe_mod(mt.zeros(1, 6, 4, dtype=mt.float64))
