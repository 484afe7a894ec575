"""Index-range checks on cuda wait for nothing: a bad embedding index or class target raises the
CPU's IndexError (same type, same text) at the next host read (``.item()`` / ``.numpy()``),
not at the call. Until then the kernels fed the bad indices stay in bounds (a gather reads 0,
the embedding gradient's scatter skips the row, the loss of a bad target is NaN), nothing
crashes, and after the error the next good step runs as usual."""
import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
import minitrans.nn.functional as F


def _cpu_message(fn):
    with pytest.raises(IndexError) as info:
        fn("cpu")
    return str(info.value)


def _embedding_sum(dev, bad):
    w = mt.tensor(np.arange(10.0).reshape(5, 2), device=dev, requires_grad=True)
    out = F.embedding(mt.tensor(np.array([1, bad, 1]), device=dev), w)
    (out * mt.tensor(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), device=dev)).sum().backward()
    return out, w


@pytest.mark.parametrize("bad", [5, 9, -1, -6])
@pytest.mark.parametrize("read", ["item", "numpy"])
def test_bad_embedding_index_raises_the_cpu_error_at_the_next_read(bad, read):
    expected = _cpu_message(lambda dev: _embedding_sum(dev, bad))
    assert expected.startswith("embedding: index out of range: indices must be in [0, 5)")
    out, w = _embedding_sum("cuda", bad)  # forward and backward queue their work: no error yet
    with pytest.raises(IndexError) as info:
        out.sum().item() if read == "item" else out.numpy()
    assert str(info.value) == expected
    # then reads work again; the scatter of the gradient stayed in bounds
    grad = w.grad.numpy()
    np.testing.assert_array_equal(grad[1], [6.0, 8.0])  # rows 0 and 2 of the output gradient
    np.testing.assert_array_equal(grad[[0, 2, 3]], np.zeros((3, 2)))
    if bad >= 5:  # beyond the table: the gather read 0 and the scatter wrote nothing
        np.testing.assert_array_equal(out.numpy()[1], [0.0, 0.0])
        np.testing.assert_array_equal(grad[4], [0.0, 0.0])


def _cross_entropy(dev, target):
    x = mt.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3) / 4, device=dev, requires_grad=True)
    loss = F.cross_entropy(x, mt.tensor(np.array(target), device=dev), reduction="none")
    loss.sum().backward()
    return loss, x


@pytest.mark.parametrize("target", [[0, 3], [-2, 1], [7, -100]])
def test_bad_class_target_raises_the_cpu_error_at_the_next_read(target):
    expected = _cpu_message(lambda dev: _cross_entropy(dev, target))
    assert expected.startswith("cross_entropy: target values must be in [0, 3) or ignore_index=-100; found")
    loss, x = _cross_entropy("cuda", target)
    with pytest.raises(IndexError) as info:
        loss.numpy()
    assert str(info.value) == expected
    bad_row = [i for i, t in enumerate(target) if t != -100 and not 0 <= t < 3][0]
    assert np.isnan(loss.numpy()[bad_row])  # the bad row's loss, computed without reading out of bounds
    assert x.grad.numpy().shape == (2, 3)


def test_the_first_failed_check_names_the_error_and_a_good_step_follows():
    mt.manual_seed(0)
    emb, head = nn.Embedding(4, 3), nn.Linear(3, 5)
    emb.to("cuda")
    head.to("cuda")
    params = list(emb.parameters()) + list(head.parameters())
    opt = mt.optim.Adam(params, lr=1e-2)

    def step(idx, target):
        logits = head(emb(mt.tensor(np.array(idx), device="cuda")))
        loss = F.cross_entropy(logits, mt.tensor(np.array(target), device="cuda"))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    bad = step([0, 4, 2], [1, 9, 0])  # both checks fail: the embedding's was queued first
    with pytest.raises(IndexError, match=r"^embedding: index out of range: indices must be in \[0, 4\), "
                                         r"got min 0, max 4$"):
        bad.item()
    losses = [step([0, 3, 2], [1, 4, 0]).item() for _ in range(3)]
    assert all(np.isfinite(losses)), losses
    for p in params:
        assert np.all(np.isfinite(p.numpy()))


def test_synchronize_raises_a_failed_check_like_a_device_assert():
    expected = _cpu_message(lambda dev: _embedding_sum(dev, 7))
    _embedding_sum("cuda", 7)
    with pytest.raises(IndexError) as info:
        mt.cuda.synchronize()
    assert str(info.value) == expected
    mt.cuda.synchronize()  # the failed check was reported once; nothing is pending now
