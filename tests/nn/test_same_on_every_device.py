"""Layers, losses and optimizer helpers behave the same on every device: the same errors with
the same messages, masks drawn by the device's own backend, one ``clip_grad_norm_``.

``cuda`` runs under Numba's CUDA simulator unless ``NUMBA_ENABLE_CUDASIM=0`` (tests/conftest.py).
"""
import math

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn.functional as F



@pytest.mark.parametrize("bad", [-1, 5])
def test_embedding_index_out_of_range_raises_on_every_device(device, bad):
    w = mt.tensor(np.arange(10.0).reshape(5, 2), device=device)
    idx = mt.tensor(np.array([0, bad, 2]), device=device)
    lo, hi = min(0, bad), max(2, bad)
    with pytest.raises(IndexError, match=rf"^embedding: index out of range: indices must be in \[0, 5\), "
                                         rf"got min {lo}, max {hi}$"):
        F.embedding(idx, w).numpy()  # on cuda the check raises at the next host read


@pytest.mark.parametrize("loss", [F.cross_entropy, F.nll_loss])
def test_class_target_out_of_range_raises_on_every_device(device, loss):
    x = mt.tensor(np.zeros((2, 3), np.float32), device=device)
    for bad in (7, -2):
        with pytest.raises(IndexError, match=rf"target values must be in \[0, 3\) or ignore_index=-100; "
                                             rf"found {bad}$"):
            loss(x, mt.tensor(np.array([0, bad]), device=device)).item()
    # the ignored value is not out of range
    assert math.isfinite(loss(x, mt.tensor(np.array([0, -100]), device=device)).item())


def test_dropout_mask_comes_from_the_device_backend(device):
    x = mt.ones(64, 32, device=device)
    mt.manual_seed(11)
    got = F.dropout(x, 0.25).numpy()
    mt.manual_seed(11)
    seed = int(mt.random.generator().integers(0, 2 ** 63))
    backend = mt.device(device).backend
    want = backend.to_numpy(backend.dropout_mask((64, 32), 0.25, seed, np.float32))
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(got)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.1 < (got == 0).mean() < 0.4


@pytest.mark.parametrize("dtype", [mt.float32, mt.float64])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_on_every_device(device, dtype, max_norm):
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5), np.zeros((0, 2))]
    ps = [mt.tensor(g, dtype=dtype, device=device, requires_grad=True) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = mt.tensor(g, dtype=dtype, device=device)
    versions = [p.grad._version_counter[0] for p in ps]
    total = mt.nn.utils.clip_grad_norm_(ps, max_norm)
    want = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    assert total.shape == () and total.device == mt.device(device) and total.dtype is dtype
    tol = 1e-6 if dtype is mt.float32 else 1e-12
    np.testing.assert_allclose(total.item(), want, rtol=tol)
    coef = min(1.0, max_norm / (want + 1e-6))
    for p, g, v in zip(ps, grads, versions):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=tol, atol=1e-7)
        assert p.grad._version_counter[0] == v + 1       # scaled in place (even by exactly 1, as PyTorch)


def test_clip_grad_norm_inf_and_nonfinite_on_every_device(device):
    ps = [mt.tensor(np.array([1.0, -3.0]), device=device, requires_grad=True)]
    ps[0].grad = mt.tensor(np.array([1.0, -3.0]), device=device)
    assert mt.nn.utils.clip_grad_norm_(ps, 1.5, norm_type=math.inf).item() == 3.0
    np.testing.assert_allclose(ps[0].grad.numpy(), np.array([1.0, -3.0]) * 1.5 / (3.0 + 1e-6))
    ps[0].grad = mt.tensor(np.array([np.inf, 1.0]), device=device)
    with pytest.raises(RuntimeError, match=r"^clip_grad_norm_: the total norm of order 2.0 is non-finite \(inf\)$"):
        mt.nn.utils.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_is_one_function():
    assert mt.nn.utils.clip_grad_norm_ is mt.optim.clip_grad_norm_
