"""LayerNorm and cross-entropy ops on the cases the fused kernels branch on: weight only, bias
only, one row, one feature, non-contiguous inputs; NumPy formulas written here and float64
gradcheck (check_op), float32 kept as float32."""
import numpy as np
import pytest

import minitrans as mt
import minitrans.nn.functional as F
from helpers import check_op, rand


def np_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return y * (1.0 if w is None else w) + (0.0 if b is None else b)


@pytest.mark.parametrize("shape", [(1, 6), (5, 1), (2, 3, 7)])
@pytest.mark.parametrize("affine", ["weight", "bias"])
def test_layer_norm_weight_only_and_bias_only(shape, affine):
    rng = np.random.default_rng(len(shape) + shape[-1])
    x, p = rand(rng, shape, -2, 3), rand(rng, shape[-1:], 0.5, 1.5)
    if affine == "weight":
        check_op(lambda x, w: F.layer_norm(x, shape[-1:], w, None), lambda x, w: np_layer_norm(x, w, None),
                 [x, p], noncontig=[0])
    else:
        check_op(lambda x, b: F.layer_norm(x, shape[-1:], None, b), lambda x, b: np_layer_norm(x, None, b),
                 [x, p], noncontig=[0])


def test_layer_norm_float32_stays_float32():
    rng = np.random.default_rng(3)
    x = mt.tensor(rand(rng, (4, 9, 16)).astype(np.float32), requires_grad=True)
    m = mt.nn.LayerNorm(16)
    y = m(x.transpose(0, 1))                                  # non-contiguous input
    assert y.dtype is mt.float32
    np.testing.assert_allclose(y.numpy(), np_layer_norm(x.numpy().astype(np.float64).transpose(1, 0, 2), 1.0, 0.0),
                               rtol=1e-4, atol=1e-5)
    (y * y).sum().backward()
    assert x.grad.dtype is mt.float32 and m.weight.grad.dtype is mt.float32


def np_cross_entropy_rows(x, t, ignore_index, ls):
    m = x.max(-1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    keep = t != ignore_index
    picked = logp[np.arange(len(t)), np.where(keep, t, 0)]
    loss = np.where(keep, -(1 - ls) * picked - ls * logp.mean(-1), 0.0)
    return np.asarray(loss.sum() / keep.sum())


@pytest.mark.parametrize("shape", [(1, 5), (6, 1), (9, 7)])
def test_cross_entropy_non_contiguous_logits_with_smoothing(shape):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    x = rand(rng, shape, -3, 3)
    t = rng.integers(0, shape[1], size=shape[0]).astype(np.int64)
    if shape[0] > 1:
        t[0] = 2 if shape[1] > 2 else 0                              # ignore_index = 2: a real class
    check_op(lambda x, t: F.cross_entropy(x, t, ignore_index=2, label_smoothing=0.15),
             lambda x, t: np_cross_entropy_rows(x, t, 2, 0.15), [x, t], noncontig=[0])


def test_cross_entropy_float32_stays_float32():
    rng = np.random.default_rng(4)
    x = mt.tensor(rand(rng, (8, 5)).astype(np.float32), requires_grad=True)
    loss = F.cross_entropy(x, mt.tensor(rng.integers(0, 5, 8)))
    assert loss.dtype is mt.float32
    loss.backward()
    assert x.grad.dtype is mt.float32
