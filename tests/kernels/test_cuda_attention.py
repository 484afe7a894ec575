"""The CUDA attention kernels against the NumPy reference (Numba simulator, tiny tiles):
awkward lengths, length 1, causal and not, masks, a head dim that is not a power of two,
with one thread per row and with a row split over several threads; the launch plan (one
forward kernel, a backward of one prepare and one fused kernel); the register/shared-memory
layout of every head dim the wrappers compile; non-contiguous q/k/v through the backend."""
import importlib
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numba import cuda  # noqa: E402

import minitrans as mt  # noqa: E402
import minitrans.nn.functional as F  # noqa: E402
from minitrans.kernels import reference as ref  # noqa: E402
from minitrans.kernels.cuda import _util  # noqa: E402

attention = importlib.import_module("minitrans.kernels.cuda.attention")

TOL = {np.float32: dict(rtol=3e-4, atol=3e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
# "rows": the default row slices (one thread per row at these head dims); "split": narrow
# slices, so each row is shared by several threads whose partial dot products are summed
ROW_BYTES = {"rows": (128, 64), "split": (32, 16)}


@pytest.fixture(params=sorted(ROW_BYTES))
def tiles(request):
    names = ("BLOCK_Q", "BLOCK_K", "ROWDOT_THREADS", "FWD_ROW_BYTES", "BWD_ROW_BYTES")
    saved = {n: getattr(attention, n) for n in names}
    values = dict(zip(names, (4, 4, 4) + ROW_BYTES[request.param]))
    for n, v in values.items():
        setattr(attention, n, v)
    yield request.param
    for n, v in saved.items():
        setattr(attention, n, v)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def close(got, want, dtype):
    np.testing.assert_allclose(got, want, **TOL[dtype])


def _bias(rng, kind, B, Tq, Tk, dtype):
    if kind is None:
        return None
    if kind == "pad":  # (B, 1, Tk) key padding; batch 1 keeps no key: its rows are fully masked
        m = np.zeros((B, 1, Tk), dtype)
        m[0, 0, Tk - 2:] = -np.inf
        m[1:, 0, :] = -np.inf
        return m
    m = rng.standard_normal((1, Tq, Tk)).astype(dtype)  # dense, shared over the batch
    m[0, 1, :] = -np.inf
    return m


CASES = [  # B, Tq, Tk, d, dv, causal, bias
    (1, 1, 1, 1, 1, False, None),     # length 1
    (2, 5, 7, 3, 4, True, None),      # awkward lengths, Tk > Tq, causal
    (2, 5, 6, 17, 5, False, "pad"),   # head dim 17 runs padded to 32; fully masked rows
    (1, 6, 6, 4, 4, True, "full"),    # causal plus a dense bias
    (1, 7, 5, 16, 16, False, None),   # exactly the padded width
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,Tq,Tk,d,dv,causal,kind", CASES)
def test_attention_matches_the_numpy_reference(tiles, dtype, B, Tq, Tk, d, dv, causal, kind):
    rng = np.random.default_rng(Tq * 100 + d)
    q, k = rng.standard_normal((B, Tq, d)).astype(dtype), rng.standard_normal((B, Tk, d)).astype(dtype)
    v, do = rng.standard_normal((B, Tk, dv)).astype(dtype), rng.standard_normal((B, Tq, dv)).astype(dtype)
    bias = _bias(rng, kind, B, Tq, Tk, dtype)
    bias_view = None if bias is None else np.broadcast_to(bias, (B, Tq, Tk))
    bias_dev = None if bias is None else dev(bias)
    scale = 1.0 / np.sqrt(d)
    o, lse = attention.attention_forward(dev(q), dev(k), dev(v), bias_dev, causal, scale)
    want_o, want_lse = ref.attention_forward(q, k, v, bias_view, causal, scale)
    close(o.copy_to_host(), want_o, dtype)
    close(lse.copy_to_host(), want_lse, dtype)  # -inf on fully masked rows compares equal
    grads = attention.attention_backward(dev(q), dev(k), dev(v), o, lse, dev(do), bias_dev, causal, scale)
    for got, want in zip(grads, ref.attention_backward(q, k, v, want_o, want_lse, do, bias_view, causal, scale)):
        close(got.copy_to_host(), want, dtype)


@pytest.mark.parametrize("tiles", ["split"], indirect=True)
def test_backward_is_one_fused_kernel_after_one_prepare(tiles):
    rng = np.random.default_rng(0)
    q = dev(rng.standard_normal((2, 9, 8)))
    before = dict(_util.counters.launched)
    o, lse = attention.attention_forward(q, q, q, None, True, 0.5)
    attention.attention_backward(q, q, q, o, lse, o, None, True, 0.5)
    launched = {n: c - before.get(n, 0) for n, c in _util.counters.launched.items() if c != before.get(n, 0)}
    assert launched == {"attention.fwd": 1, "attention.prepare": 1, "attention.bwd": 1}


@pytest.mark.parametrize("Tq,Tk", [(0, 3), (3, 0)])
def test_empty_sequences(Tq, Tk):
    q, k = np.ones((1, Tq, 4)), np.ones((1, Tk, 4))
    o, lse = attention.attention_forward(dev(q), dev(k), dev(k), None, False, 0.5)
    assert o.shape == (1, Tq, 4) and (o.copy_to_host() == 0).all() and (lse.copy_to_host() == -np.inf).all()
    dq, dk, dv = attention.attention_backward(dev(q), dev(k), dev(k), o, lse, o, None, False, 0.5)
    assert dq.shape == q.shape and dk.shape == k.shape
    for g in (dq, dk, dv):
        assert (g.copy_to_host() == 0).all()


@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("head_dim", [1, 16, 17, 64, 100, 128, 256])
def test_production_layout_fits_registers_and_shared_memory(itemsize, backward, head_dim):
    """The layout the wrappers launch on a GPU: the row slices a thread keeps are at most the
    documented row bytes (what keeps them in registers), the tiles fit SHARED_BYTES."""
    bq, bk, dpad, groups = attention.layout(head_dim, head_dim, itemsize, backward)
    cols = dpad // groups
    assert dpad >= max(head_dim, 16) and dpad & (dpad - 1) == 0 and cols * groups == dpad
    assert cols * itemsize <= (attention.BWD_ROW_BYTES if backward else attention.FWD_ROW_BYTES)
    assert attention._shared_bytes(bq, bk, dpad, groups, itemsize, backward) <= attention.SHARED_BYTES
    assert 1 <= bq <= attention.BLOCK_Q and 1 <= bk <= attention.BLOCK_K and bk * groups <= 1024


def test_head_dim_above_the_largest_specialisation_is_refused():
    q = dev(np.ones((1, 2, attention.MAX_HEAD_DIM + 1)))
    with pytest.raises(ValueError, match="head dims up to 256"):
        attention.attention_forward(q, q, q, None, False, 1.0)


@pytest.mark.parametrize("causal", [False, True])
def test_non_contiguous_q_k_v_through_the_backend(causal):
    """q, k, v as strided views (heads moved to dim 1, a column slice) on ``cuda``: the op's
    output and input gradients match the NumPy reference on contiguous copies."""
    rng = np.random.default_rng(1)
    B, T, H, d = 2, 5, 2, 6
    xq, xk, xv = (rng.standard_normal((B, T, H, 2 * d)) for _ in range(3))
    w = rng.standard_normal((B, H, T, d))
    ts = [mt.tensor(x, dtype=mt.float64, device="cuda", requires_grad=True) for x in (xq, xk, xv)]
    q, k, v = (t.transpose(1, 2)[..., ::2] for t in ts)  # (B, H, T, d) views with strides of both kinds
    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    (o * mt.tensor(w, device="cuda")).sum().backward()

    def flat(x):  # the view as a contiguous (B * H, T, d) array
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3)[..., ::2]).reshape(B * H, T, d)

    scale = 1.0 / np.sqrt(d)
    want_o, lse = ref.attention_forward(flat(xq), flat(xk), flat(xv), None, causal, scale)
    np.testing.assert_allclose(o.numpy().reshape(B * H, T, d), want_o, **TOL[np.float64])
    grads = ref.attention_backward(flat(xq), flat(xk), flat(xv), want_o, lse, w.reshape(B * H, T, d), None,
                                   causal, scale)
    for t, g in zip(ts, grads):
        want = np.zeros((B, T, H, 2 * d))
        want[..., ::2] = g.reshape(B, H, T, d).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(t.grad.numpy(), want, **TOL[np.float64])


@pytest.mark.parametrize("tiles", ["split"], indirect=True)
@pytest.mark.parametrize("causal", [False, True])
def test_float64_gradcheck_of_the_op_on_cuda(tiles, causal):
    """The fused op on ``cuda`` (rows split over threads in the "split" tiling) against float64
    central differences, with a key-padding mask."""
    rng = np.random.default_rng(2)
    q, k, v = (mt.tensor(rng.standard_normal(s), dtype=mt.float64, device="cuda", requires_grad=True)
               for s in ((2, 5, 3), (2, 6, 3), (2, 6, 2)))
    keep = np.ones((2, 1, 6), bool)
    keep[1, 0, 4:] = False
    mask = mt.tensor(keep, device="cuda")
    assert mt.autograd.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, is_causal=causal),
                                 [q, k, v], fast_mode=True)
