"""Loss modules and their functional forms: NumPy references, gradcheck, and PyTorch when installed."""
import numpy as np
import pytest

import minitrans as mt
from minitrans import nn
from minitrans.nn import functional as F

from helpers import check_op, positive, rand

RNG = np.random.default_rng


def np_nll(logp, t, w=None, ignore_index=-100, reduction="mean"):
    """logp (N, C), t (N,)"""
    w = np.ones(logp.shape[1]) if w is None else w
    keep = t != ignore_index
    tt = np.where(keep, t, 0)
    wt = w[tt] * keep
    losses = -logp[np.arange(len(t)), tt] * wt
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / wt.sum()}[reduction]


def np_log_softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_and_weighted_cross_entropy(reduction, weighted):
    x, w = rand(RNG(0), (6, 4)), positive(RNG(1), (4,))
    t = np.array([0, 3, -100, 2, 2, 1])
    wt = w if weighted else None
    kw = dict(reduction=reduction, ignore_index=-100)
    check_op(lambda a, ww: F.nll_loss(a, mt.tensor(t), ww if weighted else None, **kw),
             lambda a, ww: np_nll(a, t, wt, **kw), [x, w], noncontig=True, grad_inputs=[0, 1] if weighted else [0])
    check_op(lambda a, ww: nn.CrossEntropyLoss(ww if weighted else None, **kw)(a, mt.tensor(t)),
             lambda a, ww: np_nll(np_log_softmax(a), t, wt, **kw), [x, w], grad_inputs=[0])


def test_nll_loss_spatial_matches_flattened():
    x = rand(RNG(2), (2, 3, 4))                          # (N, C, d1)
    t = np.array([[0, 2, 1, 1], [2, 2, 0, -100]])
    flat = lambda a: np.moveaxis(a, 1, -1).reshape(-1, 3)  # noqa: E731
    check_op(lambda a: nn.NLLLoss()(a, mt.tensor(t)), lambda a: np_nll(flat(a), t.reshape(-1)), [x])
    check_op(lambda a: nn.NLLLoss(reduction="none")(a, mt.tensor(t)),
             lambda a: np_nll(flat(a), t.reshape(-1), reduction="none").reshape(2, 4), [x])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_l1(reduction):
    a, b = rand(RNG(3), (3, 5)), rand(RNG(4), (5,))     # the target broadcasts
    red = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]
    check_op(lambda x, y: nn.MSELoss(reduction=reduction)(x, y), lambda x, y: red((x - y) ** 2), [a, b],
             noncontig=True)
    check_op(lambda x, y: nn.L1Loss(reduction=reduction)(x, y), lambda x, y: red(np.abs(x - y)), [a, b])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits(reduction):
    x = rand(RNG(5), (4, 3), -30, 30)                    # large logits: the stable form must not overflow
    y = RNG(6).random((4, 3))
    w, pw = positive(RNG(7), (3,)), positive(RNG(8), (3,))
    red = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]

    def ref(x, y, w, pw):
        logsig = -np.logaddexp(0, -x)
        log1msig = -np.logaddexp(0, x)
        return red(-w * (pw * y * logsig + (1 - y) * log1msig))

    check_op(lambda x, y, w, pw: nn.BCEWithLogitsLoss(w, reduction=reduction, pos_weight=pw)(x, y), ref,
             [x, y, w, pw], noncontig=True, grad_inputs=[0, 1])
    check_op(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction=reduction),
             lambda x, y: ref(x, y, 1.0, 1.0), [x, y])


def test_loss_errors():
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"cannot be broadcast"):
        nn.MSELoss()(mt.zeros(3, 4), mt.zeros(3))
    with pytest.raises(TypeError, match="int64 class indices"):
        nn.NLLLoss()(mt.zeros(3, 4), mt.zeros(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        nn.CrossEntropyLoss(weight=mt.ones(3))(mt.zeros(2, 4), mt.tensor([0, 1]))
    with pytest.raises(IndexError, match=r"target values must be in \[0, 4\)"):
        nn.NLLLoss()(mt.zeros(2, 4), mt.tensor([0, 4]))
    with pytest.raises(ValueError, match="must be the same as input size"):
        nn.BCEWithLogitsLoss()(mt.zeros(2, 4), mt.zeros(4))


def test_legacy_size_average_reduce():
    x, y = mt.tensor([1.0, 2.0]), mt.tensor([0.0, 0.0])
    assert F.mse_loss(x, y, size_average=False).item() == 5.0
    assert nn.MSELoss(reduce=False)(x, y).tolist() == [1.0, 4.0]


CASES = {
    "ce": lambda L, x, t, w: L.nn.CrossEntropyLoss()(x, t),
    "ce_smooth_ignore": lambda L, x, t, w: L.nn.CrossEntropyLoss(ignore_index=1, label_smoothing=0.2)(x, t),
    "ce_weight_smooth": lambda L, x, t, w: L.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1, ignore_index=2)(x, t),
    "ce_weight_sum": lambda L, x, t, w: L.nn.CrossEntropyLoss(weight=w, reduction="sum", label_smoothing=0.3)(x, t),
    "ce_spatial": lambda L, x, t, w: L.nn.CrossEntropyLoss(reduction="none")(x.reshape(2, 3, 4).transpose(1, 2),
                                                                            t.reshape(2, 3)),
    "nll": lambda L, x, t, w: L.nn.NLLLoss(weight=w)(L.nn.functional.log_softmax(x, dim=1), t),
    "mse": lambda L, x, t, w: L.nn.MSELoss()(x, x.detach() * 0.5 + 1),
    "l1": lambda L, x, t, w: L.nn.L1Loss(reduction="sum")(x, x.detach() * -1.0 + 0.5),
    "bce": lambda L, x, t, w: L.nn.BCEWithLogitsLoss(pos_weight=w)(x, (x.detach() > 0).double()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_losses_against_pytorch(case):
    torch = pytest.importorskip("torch")
    x = rand(RNG(9), (6, 4))
    t = np.array([0, 3, 1, 2, 2, 1])
    w = positive(RNG(10), (4,))
    out = []
    for L in (mt, torch):
        xt = L.tensor(x, requires_grad=True)
        loss = CASES[case](L, xt, L.tensor(t), L.tensor(w))
        (loss * L.tensor(rand(RNG(11), tuple(loss.shape)))).sum().backward()
        out.append((loss.detach().numpy(), xt.grad.numpy()))
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
