"""The public API gives the same results, dtypes, errors and version-counter behaviour on every
device. One test per behaviour the devices have been seen to disagree on: embedding index
checks, a matmul with an empty contraction, an in-place edit of a saved view, gradient
clipping, the choice of reference kernels, where dropout masks are drawn, clamping, and the
gradient of an index (``index_grad``, one launch on cuda for a basic index).

Each test runs once per device of the ``device`` fixture (cpu, and cuda under Numba's
simulator where numba-cuda is installed); expected values are NumPy expressions written here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
import minitrans.nn.functional as F


def _error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the exception is what is compared
        return type(e), str(e)
    return None


# ----------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("idx,lo,hi", [([0, -1, 2], -1, 2), ([3, 0], 0, 3), ([[1, 7], [0, 2]], 0, 7)],
                         ids=["negative", "one past the end", "far out of range"])
def test_embedding_index_out_of_range_raises_the_same_error(device, idx, lo, hi):
    weight = mt.tensor(np.arange(6.0).reshape(3, 2), device=device, requires_grad=True)
    ids = mt.tensor(np.array(idx, np.int64), device=device)
    got = _error(lambda: F.embedding(ids, weight).numpy())  # on cuda: raised at the next host read
    assert got == (IndexError, f"embedding: index out of range: indices must be in [0, 3), got min {lo}, max {hi}")
    layer = nn.Embedding(3, 2)
    layer.to(device)
    assert _error(lambda: layer(ids).numpy()) == got


def test_embedding_in_range_gathers_rows(device):
    w = np.arange(8.0).reshape(4, 2)
    out = F.embedding(mt.tensor(np.array([[3, 0], [1, 3]]), device=device), mt.tensor(w, device=device))
    np.testing.assert_array_equal(out.numpy(), w[[[3, 0], [1, 3]]])


# ----------------------------------------------------------------------------- matmul, K = 0
@pytest.mark.parametrize("a_shape,b_shape", [((2, 0), (0, 3)), ((4, 2, 0), (0, 3)), ((0,), (0, 3))])
@pytest.mark.parametrize("dtype", [mt.float32, mt.float64])
def test_matmul_with_an_empty_contraction_gives_zeros(device, a_shape, b_shape, dtype):
    a = mt.zeros(*a_shape, dtype=dtype, device=device, requires_grad=True)
    b = mt.zeros(*b_shape, dtype=dtype, device=device, requires_grad=True)
    out = a @ b
    want = np.matmul(np.zeros(a_shape), np.zeros(b_shape))
    assert out.device == mt.device(device) and out.dtype is dtype
    np.testing.assert_array_equal(out.numpy(), want)
    out.sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    np.testing.assert_array_equal(b.grad.numpy(), 0.0)


# ----------------------------------------------------------------------------- saved views edited in place
def _assert_backward_refuses(loss, *leaves):
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()
    for t in leaves:
        assert t.grad is None, "a gradient was written before the error"


VIEWS = {"slice": lambda x: x[1:], "transpose": lambda x: x.transpose(0, 1), "reshape": lambda x: x.reshape(6),
         "expand": lambda x: x.unsqueeze(0).expand(2, 2, 3), "select": lambda x: x[0]}


@pytest.mark.parametrize("view", list(VIEWS))
def test_editing_the_base_of_a_saved_view_raises_at_backward(device, view):
    w = mt.tensor(np.array([2.0]), device=device, requires_grad=True)
    x = mt.tensor(np.arange(6.0).reshape(2, 3), device=device)
    y = VIEWS[view](x) * w                    # Mul saves the view
    x.add_(1.0)                               # ... whose storage changes through the base
    _assert_backward_refuses(y.sum(), w)


@pytest.mark.parametrize("view", ["slice", "transpose", "select"])
def test_editing_a_view_of_a_saved_tensor_raises_at_backward(device, view):
    w = mt.tensor(np.array([2.0]), device=device, requires_grad=True)
    x = mt.tensor(np.arange(6.0).reshape(2, 3), device=device)
    y = x * w                                 # Mul saves x
    VIEWS[view](x).mul_(3.0)                  # ... changed through a view of it
    _assert_backward_refuses(y.sum(), w)


def test_views_share_the_version_counter(device):
    x = mt.tensor(np.arange(6.0).reshape(2, 3), device=device)
    v = x.transpose(0, 1)[1:]
    before = x._version
    v.add_(1.0)
    assert x._version == v._version == before + 1
    x.mul_(2.0)
    assert v._version == before + 2
    c = x.clone()
    c.add_(1.0)
    assert x._version == before + 2, "a copy has its own counter"


# ----------------------------------------------------------------------------- clip_grad_norm_
CLIPPERS = {"nn.utils": lambda: nn.utils.clip_grad_norm_, "optim": lambda: mt.optim.clip_grad_norm_}


@pytest.mark.parametrize("which", list(CLIPPERS))
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 100.0], ids=["clipped", "not clipped"])
def test_clip_grad_norm_agrees_on_every_device(device, which, norm_type, max_norm):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    params = []
    for g in grads:
        p = mt.tensor(np.zeros_like(g), device=device, requires_grad=True)
        p.grad = mt.tensor(g, device=device)
        params.append(p)
    flat = np.concatenate([g.ravel() for g in grads]).astype(np.float64)
    norm = np.abs(flat).max() if math.isinf(norm_type) else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    coef = min(1.0, max_norm / (norm + 1e-6))
    versions = [p.grad._version for p in params]
    total = CLIPPERS[which]()(params, max_norm, norm_type)
    assert isinstance(total, mt.Tensor) and total.shape == () and total.dtype is mt.float32
    assert total.device == mt.device(device), f"the norm is on {total.device}, the gradients on {device}"
    np.testing.assert_allclose(total.item(), norm, rtol=1e-6)
    for p, g, v in zip(params, grads, versions):
        assert p.grad.device == mt.device(device)
        np.testing.assert_allclose(p.grad.numpy(), g * np.float32(coef), rtol=1e-6, atol=1e-7)
        assert p.grad._version == v + 1, "the gradients are scaled in place (by 1 when not clipped), as in PyTorch"


@pytest.mark.parametrize("which", list(CLIPPERS))
def test_clip_grad_norm_non_finite_error_is_the_same(device, which):
    p = mt.tensor(np.zeros(2, np.float32), device=device, requires_grad=True)
    p.grad = mt.tensor(np.array([np.inf, 1.0], np.float32), device=device)
    got = _error(lambda: CLIPPERS[which]()([p], 1.0, 2.0, error_if_nonfinite=True))
    assert got == (RuntimeError, "clip_grad_norm_: the total norm of order 2.0 is non-finite (inf)")


# ----------------------------------------------------------------------------- set_kernels("reference")
def _softmax_np(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class _Spy:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _device_softmax_launches():
    """Launches of a compiled CUDA softmax kernel so far (0 where numba-cuda is not installed)."""
    try:
        from minitrans.kernels.cuda._util import counters
    except ImportError:
        return 0
    return sum(n for k, n in counters.launched.items() if "softmax" in k)


def test_set_kernels_reference_routes_the_fused_ops_on_every_device(device):
    """After ``set_kernels("reference")`` softmax gives the NumPy oracle's values without the
    device's compiled kernel: on a host backend the oracle function itself is called (the spy
    is installed before the choice is made); on a device backend no compiled softmax kernel is
    launched (the backend may wrap the oracle in its own transfers)."""
    from minitrans.kernels import reference

    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    t = mt.tensor(x, device=device, requires_grad=True)
    backend = t.device.backend
    prev = mt.get_kernels()
    with pytest.MonkeyPatch.context() as mp:
        spy = _Spy(reference.softmax_forward)
        mp.setattr(reference, "softmax_forward", spy)
        try:
            mt.set_kernels("numba")
            before = _device_softmax_launches()
            F.softmax(t, -1)
            compiled_launches = _device_softmax_launches() - before
            mt.set_kernels("reference")
            assert mt.get_kernels() == "reference"
            assert backend.get_kernels() == "reference"
            before, calls = _device_softmax_launches(), spy.calls
            y = F.softmax(t, -1)
            np.testing.assert_allclose(y.numpy(), _softmax_np(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
            assert y.device == mt.device(device) and y.dtype is mt.float32
            if backend.host_memory:
                assert spy.calls == calls + 1, "softmax did not run the NumPy reference kernel"
            else:
                assert compiled_launches > 0, "the launch counter does not see the compiled softmax"
                assert _device_softmax_launches() == before, "a compiled softmax kernel ran under 'reference'"
            (y * mt.tensor(x, device=device)).sum().backward()
            assert t.grad.device == mt.device(device)
        finally:
            mt.set_kernels(prev)
    assert mt.get_kernels() == prev and backend.get_kernels() == prev


def test_reference_and_compiled_attention_agree(device):
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    outs = {}
    prev = mt.get_kernels()
    try:
        for name in ("numba", "reference"):
            mt.set_kernels(name)
            ts = [mt.tensor(a, device=device, requires_grad=True) for a in (q, k, v)]
            o = F.scaled_dot_product_attention(*ts, is_causal=True)
            o.sum().backward()
            outs[name] = [o.numpy()] + [t.grad.numpy() for t in ts]
    finally:
        mt.set_kernels(prev)
    s = q @ np.swapaxes(k, -1, -2) / 2.0 + np.triu(np.full((3, 3), -np.inf), 1)
    np.testing.assert_allclose(outs["reference"][0], _softmax_np(s) @ v, rtol=1e-10)
    for a, b in zip(outs["numba"], outs["reference"]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- dropout
def _host_to_device_spy(mp):
    """Count host->device copies: ``copy_to_device`` of the device array class (the simulator's
    or numba-cuda's) and ``cuda.to_device``. Empty where numba-cuda is not installed."""
    counts = {"copies": 0}
    try:
        from numba import config, cuda
    except ImportError:
        return counts
    if config.ENABLE_CUDASIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as cls
    else:
        from numba.cuda.cudadrv.devicearray import DeviceNDArray as cls

    def counted(fn):
        def wrapper(*a, **k):
            counts["copies"] += 1
            return fn(*a, **k)
        return wrapper

    mp.setattr(cls, "copy_to_device", counted(cls.copy_to_device))
    mp.setattr(cuda, "to_device", counted(cuda.to_device))
    return counts


def test_dropout_mask_is_drawn_by_the_backend_on_the_device(device):
    x = mt.ones(8, 8, device=device, requires_grad=True)
    backend = x.device.backend
    with pytest.MonkeyPatch.context() as mp:
        spy = _Spy(backend.dropout_mask)
        mp.setattr(backend, "dropout_mask", staticmethod(spy))
        copies = _host_to_device_spy(mp)
        mt.manual_seed(7)
        y = F.dropout(x, 0.5)
        n_copies = copies["copies"]
    assert spy.calls == 1, "dropout did not draw its mask with the backend's dropout_mask"
    if not backend.host_memory:
        assert n_copies == 0, f"{n_copies} host->device copies during dropout: the mask was drawn on the host"
    h = y.numpy()
    assert np.isin(h, [0.0, 2.0]).all() and 0.2 < (h == 0).mean() < 0.8
    mt.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), h)   # manual_seed fixes the mask
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), h)


# ----------------------------------------------------------------------------- clamp
@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (None, 0.5), (0.0, None)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clamp_and_clamp_in_place(device, lo, hi, dtype):
    x = np.array([[-2.0, -0.5, 0.25], [0.75, 1.5, 3.0]], dtype)
    want = np.clip(x, lo, hi)
    t = mt.tensor(x, device=device, requires_grad=True)
    out = t.clamp(lo, hi)
    np.testing.assert_array_equal(out.numpy(), want)
    assert out.numpy().dtype == dtype and out.device == mt.device(device)
    out.sum().backward()
    inside = (x >= (-np.inf if lo is None else lo)) & (x <= (np.inf if hi is None else hi))
    np.testing.assert_array_equal(t.grad.numpy(), inside.astype(dtype))
    u = mt.tensor(x, device=device)
    v = u._version
    assert u.clamp_(lo, hi) is u
    np.testing.assert_array_equal(u.numpy(), want)
    assert u._version == v + 1
    assert u.numpy().dtype == dtype


def test_clamp_without_bounds_raises_the_same_error(device):
    t = mt.tensor(np.zeros(2), device=device)
    assert _error(lambda: t.clamp()) == (ValueError, "clamp: at least one of min and max must be given")
    assert _error(lambda: t.clamp_()) == (ValueError, "clamp: at least one of min and max must be given")


# ----------------------------------------------------------------------------- index gradient
@pytest.mark.parametrize("idx", [(slice(1, None, 2), 0), (None, Ellipsis, slice(0, 2)), ([2, 0, 2],)],
                         ids=["slices and an int", "none and ellipsis", "repeated index array"])
def test_index_grad_places_the_gradient_on_every_device(device, idx):
    xp = mt.device(device).backend
    shape = (4, 3)
    probe = np.zeros(shape)
    sel = tuple(np.array(i) if isinstance(i, list) else i for i in idx)
    g = np.arange(1.0, 1.0 + probe[sel].size).reshape(probe[sel].shape)
    want = np.zeros(shape, np.float32)
    np.add.at(want, sel, g)   # a basic index selects each cell once: the same as want[sel] = g
    dev_sel = tuple(xp.from_numpy(i) if isinstance(i, np.ndarray) else i for i in sel)
    got = xp.index_grad(shape, np.float32, dev_sel, xp.from_numpy(g))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(xp.to_numpy(got), want)
    assert _error(lambda: xp.index_grad(shape, np.float32, (5,), xp.from_numpy(np.ones(3)))) == (
        IndexError, "index 5 is out of bounds for axis 0 with size 4")


# ----------------------------------------------------------------------------- addmm (Linear forward)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_addmm_is_the_product_plus_the_bias_on_every_device(device, dtype):
    rng = np.random.default_rng(5)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype is np.float32 else dict(rtol=1e-12, atol=1e-12)
    a, w, bias = (rng.standard_normal(s).astype(dtype) for s in ((6, 4), (3, 4), (3,)))
    xp = mt.device(device).backend
    got = xp.addmm(xp.asarray(bias), xp.asarray(a), xp.transpose(xp.asarray(w)))
    np.testing.assert_allclose(xp.to_numpy(got), a @ w.T + bias, **tol)
    out = F.linear(mt.tensor(a, device=device), mt.tensor(w, device=device), mt.tensor(bias, device=device))
    np.testing.assert_allclose(out.numpy(), a @ w.T + bias, **tol)
