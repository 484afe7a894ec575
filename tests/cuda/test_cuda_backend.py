"""The CUDA backend against the CPU backend: the same ops, forward and gradients, on
``cuda`` (Numba's simulator without a GPU: tiny shapes) and on ``cpu``; one training step
of a tiny encoder-decoder on both; and a proof that a training step on ``cuda`` copies
nothing between host and device."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import minitrans as mt  # noqa: E402
import minitrans.nn as nn  # noqa: E402
import minitrans.nn.functional as F  # noqa: E402
from minitrans.backends.cuda import CUDABackend, CudaArray  # noqa: E402
from minitrans.backends.cpu import CPUBackend  # noqa: E402
from seq2seq_step import Seq2Seq, _batch, _forward_backward  # noqa: E402

TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _rng(seed=0):
    return np.random.default_rng(seed)


def both(fn, *arrays, grad=True, tol=None, seed=1):
    """Run ``fn`` on cpu and on cuda tensors made from ``arrays``; compare every output and
    (for float inputs) every input gradient of sum(output * fixed random weights)."""
    res = {}
    for dev in ("cpu", "cuda"):
        ts = [mt.tensor(a, dtype=mt.float64 if a.dtype == np.float64 else None, device=dev,
                        requires_grad=grad and a.dtype.kind == "f") for a in arrays]
        out = fn(*ts)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        for o in outs:
            assert o.device.type == dev
            assert isinstance(o._data, CudaArray if dev == "cuda" else np.ndarray)
        if grad:
            r = _rng(seed)
            loss = None
            for o in outs:
                if o.requires_grad:
                    w = mt.tensor(r.standard_normal(o.shape).astype(o._data.dtype), device=dev)
                    term = (o * w).sum()
                    loss = term if loss is None else loss + term
            loss.backward()
        res[dev] = ([o.numpy() for o in outs],
                    [t.grad.numpy() if t.grad is not None else None for t in ts])
    (oc, gc), (og, gg) = res["cpu"], res["cuda"]
    for a, b in zip(oc, og):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        t = tol or TOL.get(a.dtype.type, dict(rtol=0, atol=0))
        np.testing.assert_allclose(b, a, **t)
    for a, b in zip(gc, gg):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype
            np.testing.assert_allclose(b, a, **(tol or TOL[a.dtype.type]))
    return res


def randn(*shape, dtype=np.float64, seed=0):
    return _rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------- basics
def test_device_and_module_api():
    assert mt.cuda.is_available() and mt.cuda.device_count() >= 1
    mt.cuda.synchronize()
    x = mt.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = x.to("cuda")
    assert y.device == "cuda" and isinstance(y._data, CudaArray)
    np.testing.assert_array_equal(y.cpu().numpy(), x.numpy())
    lin = nn.Linear(3, 2)
    lin.to("cuda")
    assert lin.weight.device == "cuda" and isinstance(lin.weight._data, CudaArray)
    for name in dir(CPUBackend):  # every primitive of the CPU interface exists on cuda
        if not name.startswith("_"):
            assert hasattr(CUDABackend, name), name


def test_to_device_backward_copies_gradient_back():
    x = mt.tensor(randn(2, 3), requires_grad=True)
    (x.to("cuda") * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 3.0))


# ---------------------------------------------------------------------------- elementwise
def test_elementwise_broadcasting():
    a, b = randn(3, 1, 4), randn(2, 4, seed=1)
    pos = np.abs(randn(2, 4, seed=2)) + 0.5
    both(lambda a, b, p: (a * b + a / p - b ** 2 + (2.0 - a) * 0.5 + 1.0 / p, a.exp() * p.log(), p.sqrt(),
                          a.tanh() + b.sigmoid(), a.relu(), F.gelu(a), a.abs(), p ** a,
                          mt.maximum(a, b), mt.minimum(a, b), a.clamp(-0.5, 0.7), p.rsqrt(), -b),
         a, b, pos)


def test_elementwise_float32_and_compare_masks():
    a, b = randn(3, 4, dtype=np.float32), randn(4, dtype=np.float32, seed=1)
    both(lambda a, b: (a * b - b, mt.where(a > b, a, b * 2.0), a.masked_fill(a < 0, 0.25),
                       (a >= 0) & (b < 0.5), ~(a == a), (a != b) | (a <= 0)), a, b)


def test_in_place_and_scalar_first_ops():
    x = randn(2, 3)
    for dev in ("cpu", "cuda"):
        t = mt.tensor(x, dtype=mt.float64, device=dev)
        d = t._data
        d += 1.0
        d *= d
        d -= t._data[0]
        r = 2.0 ** t
        if dev == "cpu":
            ref = (t.numpy(), r.numpy())
        else:
            np.testing.assert_allclose(t.numpy(), ref[0])
            np.testing.assert_allclose(r.numpy(), ref[1])


# ---------------------------------------------------------------------------- reductions
def test_reductions():
    x = np.round(randn(2, 3, 4), 1)  # ties for max/min
    both(lambda x: (x.sum(), x.sum(dim=(0, 2), keepdim=True), x.mean(1), x.amax(dim=-1), x.amin((0, 1)),
                    x.max(), x.var(dim=1), x.max(dim=2).values), x)
    for dev in ("cpu", "cuda"):
        t = mt.tensor(x, device=dev)
        got = (t.argmax(dim=1).numpy(), t.argmin().numpy(), t.max(dim=0).indices.numpy(),
               (t > 0).any(dim=1).numpy(), (t > -5).all().numpy())
        if dev == "cpu":
            ref = got
        else:
            for a, b in zip(got, ref):
                np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("sa,sb", [((3, 5), (5, 2)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
                                   ((4,), (2, 4, 3)), ((3, 4), (4,)), ((4,), (4,))])
def test_matmul(sa, sb):
    both(lambda a, b: a @ b, randn(*sa), randn(*sb, seed=1))


def test_matmul_transposed_and_linear():
    both(lambda a, b: (a.mT @ b.T, F.linear(b, a.T, None)), randn(4, 3), randn(5, 4, seed=1))
    both(lambda x, w, b: F.linear(x, w, b), randn(2, 3, 4), randn(5, 4, seed=1), randn(5, seed=2))


# ---------------------------------------------------------------------------- shape / indexing
def test_views_and_cat():
    a, b = randn(2, 3, 4), randn(2, 1, 4, seed=1)
    both(lambda a, b: (mt.cat([a, b], dim=1), mt.stack([a[:, 0], b[:, 0]], dim=1), a.permute(2, 0, 1) * 1.0,
                       a.transpose(0, 2).reshape(4, 6), b.expand(2, 3, 4) * a, a[:, 1:, ::2],
                       a[..., None, 1], *a.chunk(2, dim=-1), a.unsqueeze(0).flatten(1, 2)), a, b)


def test_advanced_indexing_with_repeats_accumulates():
    x = randn(5, 3)
    idx = np.array([0, 3, 0, 0, 4])
    res = both(lambda x: (x[mt.tensor(idx, device=x.device)], x[[1, 1, 2]], x[:, [2, 0, 2]],
                          x[mt.tensor([[0, 1], [1, 1]], device=x.device), mt.tensor([2, 2], device=x.device)],
                          x[x.detach() > 0.5]), x)
    g = res["cuda"][1][0]
    assert g.shape == (5, 3)


def test_setitem_and_add_at_on_cuda_arrays():
    x = randn(4, 5)
    for xp in (CPUBackend, CUDABackend):
        a = xp.from_numpy(x.copy())
        a[1] = 0.0
        a[:, 2:4] = xp.from_numpy(np.ones((4, 2)))
        idx = np.array([0, 0, 3])
        xp.add_at(a, (idx, np.array([1, 1, 4])), xp.from_numpy(np.array([1.0, 2.0, 3.0])))
        a[np.array([2, 3]), 0] = 7.0
        out = xp.to_numpy(a)
        if xp is CPUBackend:
            ref = out
        else:
            np.testing.assert_allclose(out, ref)


# ---------------------------------------------------------------------------- nn ops
def test_softmax_family():
    x = randn(2, 3, 5)
    both(lambda x: (F.softmax(x, dim=-1), F.softmax(x, dim=1), F.log_softmax(x, dim=0)), x)
    both(lambda x: F.softmax(x, dim=-1), randn(3, 6, dtype=np.float32))


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_cross_entropy(ls):
    x = randn(6, 5)
    t = np.array([1, 0, 4, -100, 2, 2])
    both(lambda x, t: (F.cross_entropy(x, t, label_smoothing=ls), F.cross_entropy(x, t, reduction="sum"),
                       F.cross_entropy(x, t, reduction="none")), x, t)
    x3, t3 = randn(2, 4, 3), np.array([[0, 3, 1], [2, 2, 0]])
    both(lambda x, t: F.cross_entropy(x, t, label_smoothing=ls), x3, t3)


def test_cross_entropy_invalid_target_raises_on_cuda_as_on_cpu():
    messages = []
    for dev in ("cpu", "cuda"):
        x = mt.tensor(randn(2, 3), device=dev)
        with pytest.raises(IndexError) as info:  # on cuda: at the next host read
            F.cross_entropy(x, mt.tensor([0, 7], device=dev), reduction="none").numpy()
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "[0, 3)" in messages[0]


def test_nll_loss():
    both(lambda x, t: F.nll_loss(F.log_softmax(x, dim=-1), t), randn(4, 3), np.array([0, 2, -100, 1]))


def test_layer_norm():
    x, w, b = randn(2, 3, 6), randn(6, seed=1), randn(6, seed=2)
    both(lambda x, w, b: (F.layer_norm(x, (6,), w, b), F.layer_norm(x, (3, 6))), x, w, b)


def test_embedding_repeated_indices_and_padding():
    w = randn(6, 4)
    idx = np.array([[1, 5, 1], [0, 1, 3]])
    both(lambda w, i: F.embedding(i, w, padding_idx=0), w, idx)
    both(lambda w, i: F.embedding(i, w), w, idx)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_masks(causal):
    q, k, v = randn(2, 2, 5, 4), randn(2, 2, 6, 4, seed=1), randn(2, 2, 6, 3, seed=2)
    keep = np.ones((2, 1, 1, 6), bool)
    keep[0, ..., 4:] = False
    fmask = randn(5, 6, seed=3)
    res = both(lambda q, k, v, m, f: (F.scaled_dot_product_attention(q, k, v, m, is_causal=causal),
                                      F.scaled_dot_product_attention(q, k, v, f),
                                      F.scaled_dot_product_attention(q, k, v, m, is_causal=causal, fused=False)),
               q, k, v, keep, fmask)
    np.testing.assert_allclose(res["cuda"][0][0], res["cuda"][0][2], rtol=1e-9, atol=1e-11)


def test_multihead_attention_with_padding_and_weights():
    mt.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = randn(2, 3, 8).astype(np.float32)            # the layer's dtype: a float64 input is an error, as in PyTorch
    kpm = np.array([[False, False, True], [False, False, False]])
    outs = {}
    for dev in ("cpu", "cuda"):
        mha.to(dev)
        t = mt.tensor(x, device=dev, requires_grad=True)
        o, w = mha(t, t, t, key_padding_mask=mt.tensor(kpm, device=dev), need_weights=True)
        (o.sum() + (w * w).sum()).backward()
        outs[dev] = (o.numpy(), w.numpy(), t.grad.numpy(), mha.in_proj_weight.grad.numpy())
        mha.zero_grad()
    for a, b in zip(outs["cpu"], outs["cuda"]):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6)


def test_dropout_on_device_is_seeded_and_scaled():
    x = mt.ones(64, 32, device="cuda", requires_grad=True)
    mt.manual_seed(3)
    y1 = F.dropout(x, 0.25).numpy()
    mt.manual_seed(3)
    y2 = F.dropout(x, 0.25)
    np.testing.assert_array_equal(y1, y2.numpy())
    assert set(np.unique(y1)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.2 < (y1 == 0).mean() < 0.3
    y2.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y1)
    from minitrans.kernels import reference as xref
    mt.manual_seed(3)
    seed = int(mt.random.generator().integers(0, 2 ** 63))
    np.testing.assert_array_equal(y1, xref.dropout_mask((64, 32), 0.25, seed, np.float32))


def test_clip_grad_norm_stays_on_device():
    gs = [randn(3, 4), randn(5, seed=1)]
    got = {}
    for dev in ("cpu", "cuda"):
        ps = [mt.tensor(g, dtype=mt.float64, device=dev, requires_grad=True) for g in gs]
        for p, g in zip(ps, gs):
            p.grad = mt.tensor(g * 3, dtype=mt.float64, device=dev)
        n = nn.utils.clip_grad_norm_(ps, 1.0)
        got[dev] = (n.item(), [p.grad.numpy() for p in ps])
    np.testing.assert_allclose(got["cuda"][0], got["cpu"][0], rtol=1e-12)
    for a, b in zip(got["cpu"][1], got["cuda"][1]):
        np.testing.assert_allclose(b, a, rtol=1e-12)


# ---------------------------------------------------------------------------- training step
def _spy_transfers(monkeypatch, calls):
    """Count every host<->device copy entry point of numba-cuda and of the backend.

    Explicit copies: ``cuda.to_device``, ``copy_to_host`` / ``copy_to_device`` of device
    arrays, the backend's ``from_numpy`` / ``to_numpy`` (in every module of the
    ``minitrans.backends.cuda`` package that binds them, and on ``CUDABackend``).
    Implicit copies: a host NumPy array passed straight to a kernel launch is moved to the
    device by numba-cuda (``In`` / ``Out`` / ``InOut`` argument hints): through
    ``devicearray.auto_device`` (the simulator's ``numba.cuda.simulator.cudadrv.devicearray``,
    and older numba-cuda on a GPU) or ``devicearray._to_strided_memory_view`` (numba-cuda
    on a GPU). Those two are counted only when they really converted host data (their
    second result is True); device arrays pass through them without a copy."""
    import importlib
    import sys

    from numba import cuda

    from minitrans.backends import cuda as cuda_backend

    def spy(name, fn):
        def wrapper(*a, **k):
            calls.append(name)
            return fn(*a, **k)
        return wrapper

    def spy_converted(name, fn):
        def wrapper(*a, **k):
            res = fn(*a, **k)
            if isinstance(res, tuple) and len(res) == 2 and res[1]:
                calls.append(name)
            return res
        return wrapper

    monkeypatch.setattr(cuda, "to_device", spy("cuda.to_device", cuda.to_device))
    if mt.cuda.is_simulated():
        from numba.cuda.simulator.cudadrv import devicearray as devicearray_module
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as array_class
    else:
        devicearray_module = importlib.import_module("numba.cuda.cudadrv.devicearray")
        from numba.cuda.cudadrv.devicearray import DeviceNDArray as array_class
    for meth in ("copy_to_host", "copy_to_device"):
        monkeypatch.setattr(array_class, meth, spy(f"DeviceArray.{meth}", getattr(array_class, meth)))
    found = 0
    for fname in ("auto_device", "_to_strided_memory_view"):
        if hasattr(devicearray_module, fname):  # looked up at call time by numba's argument hints
            real = getattr(devicearray_module, fname)
            monkeypatch.setattr(devicearray_module, fname, spy_converted(f"devicearray.{fname}", real))
            found += 1
    assert found, f"no implicit-transfer entry point found in {devicearray_module.__name__}"
    mods = [m for n, m in list(sys.modules.items())
            if m is not None and (n == cuda_backend.__name__ or n.startswith(cuda_backend.__name__ + "."))]
    for name in ("from_numpy", "to_numpy"):
        orig = getattr(cuda_backend, name)
        for m in mods:
            if getattr(m, name, None) is orig:
                monkeypatch.setattr(m, name, spy(f"backend.{name}", orig))
        monkeypatch.setattr(CUDABackend, name, staticmethod(spy(f"CUDABackend.{name}", orig)))


def test_transfer_spy_catches_host_array_passed_to_a_kernel(monkeypatch):
    """The spy is not vacuous: a host NumPy array handed straight to a kernel launch (no
    explicit copy anywhere) is counted as an implicit numba-cuda transfer."""
    from minitrans.kernels.cuda import array as array_kernels
    from minitrans.kernels.cuda._util import pad

    dst = CUDABackend.zeros((4,), np.float64)
    src = np.arange(4.0)  # host memory
    calls = []
    _spy_transfers(monkeypatch, calls)
    array_kernels._copy_kernel[1, 4](dst._device_array, src, 4, pad((4,), 1), pad((1,)), pad((1,)))
    monkeypatch.undo()
    assert any(c.startswith("devicearray.") for c in calls), calls
    np.testing.assert_array_equal(CUDABackend.to_numpy(dst), src)
    calls.clear()
    _spy_transfers(monkeypatch, calls)  # a device operand: no transfer
    array_kernels._copy_kernel[1, 4](dst._device_array, dst._device_array, 4, pad((4,), 1), pad((1,)), pad((1,)))
    monkeypatch.undo()
    assert calls == [], calls


def test_transfer_spy_catches_host_array_inside_a_step(monkeypatch):
    """A fused kernel fed a host array in the middle of forward + backward (a LayerNorm
    weight built with NumPy instead of on the device) is caught by the spy."""
    from minitrans.kernels import cuda as kernels

    real = kernels.layer_norm_forward

    def leaky(x, weight, bias, eps):
        return real(x, np.ones(tuple(x.shape)[-1:], x.dtype), bias, eps)

    ln = nn.LayerNorm(4)
    ln.to("cuda")
    x = mt.tensor(randn(2, 4).astype(np.float32), device="cuda", requires_grad=True)
    calls = []
    _spy_transfers(monkeypatch, calls)
    monkeypatch.setattr(kernels, "layer_norm_forward", leaky)
    ln(x).sum().backward()
    monkeypatch.undo()
    assert any(c.startswith("devicearray.") for c in calls), calls


def test_training_step_matches_cpu_without_host_device_copies(monkeypatch):
    """(b) one Adam step of a tiny encoder-decoder on cuda equals the CPU step to 1e-4, and
    (c) forward + backward + optimizer.step + zero_grad on cuda copy nothing from host to device
    (the data and targets are moved to the device before the step) and read nothing back: the
    index range checks of the two embeddings' tokens and the loss's targets are read at the
    next host read (``loss.item()`` below)."""
    mt.manual_seed(0)
    cpu = Seq2Seq()
    gpu = Seq2Seq()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    names = [n for n, _ in cpu.named_parameters()]
    res = {}
    for dev, model in (("cpu", cpu), ("cuda", gpu)):
        # eps well above float32 round-off: parameters whose true gradient is exactly 0 (the
        # attention key bias) get ~1e-8 noise (float32 accumulation, different order on each
        # device) that Adam with a small eps would blow up to a step of up to ±lr
        opt = mt.optim.Adam(model.parameters(), lr=1e-2, eps=1e-4)
        src, tgt_in, tgt_out, kpm = (mt.tensor(a, device=dev) for a in _batch())
        calls = []
        if dev == "cuda":
            _spy_transfers(monkeypatch, calls)
        loss = _forward_backward(model, src, tgt_in, tgt_out, kpm)
        grads = [p.grad for p in model.parameters()]
        opt.step()
        opt.zero_grad()
        if dev == "cuda":
            monkeypatch.undo()
            reads = [c for c in calls if "copy_to_host" in c]
            others = [c for c in calls if "copy_to_host" not in c and "to_numpy" not in c]
            assert others == [], f"host->device copies inside the training step: {calls}"
            assert reads == [], f"device->host reads inside the training step: {calls}"
            assert isinstance(loss._data, CudaArray)
            assert all(isinstance(p._data, CudaArray) for p in model.parameters())
            assert all(isinstance(s["exp_avg"], CudaArray) for s in opt.state.values())
        res[dev] = (loss.item(), [g.numpy() for g in grads], [p.numpy() for p in model.parameters()])
    assert abs(res["cpu"][0] - res["cuda"][0]) < 1e-4
    for n, a, b in zip(names, res["cpu"][1], res["cuda"][1]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=f"grad {n}")
    for n, a, b in zip(names, res["cpu"][2], res["cuda"][2]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=f"param {n}")
