"""``F.scaled_dot_product_attention``: fused op against NumPy, float64 gradcheck, fused vs composed.

Every check runs under both CPU kernel modes (``numba`` and ``reference``).
"""
import zlib

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn.functional as F
from minitrans.nn import functional_attention
from minitrans.ops.attention import ScaledDotProductAttention
from helpers import check_op, rand


@pytest.fixture(params=["numba", "reference"], autouse=True)
def kernels(request):
    before = mt.get_kernels()
    mt.set_kernels(request.param)
    yield request.param
    mt.set_kernels(before)


# ----------------------------------------------------------------------------- the NumPy reference
def np_attention(q, k, v, mask=None, causal=False, scale=None):
    """softmax(q·kᵀ·scale + mask)·v; bool mask True = keep; a row with no key left gives zeros."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, bool)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            keep &= np.broadcast_to(mask, s.shape)
        else:
            s = s + mask
            keep &= np.isfinite(np.broadcast_to(mask, s.shape))
    if causal:
        Tq, Tk = s.shape[-2:]
        keep &= np.tril(np.ones((Tq, Tk), bool))
    s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    z = e.sum(-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    return p @ v


def _mask(rng, kind, lead, Tq, Tk):
    if kind is None:
        return None
    if kind == "bool":                     # (..., Tq, Tk), at least one key per row kept
        m = rng.random(lead + (Tq, Tk)) < 0.6
        m[..., 0] = True
        return m
    if kind == "padding":                  # key padding, broadcast (B, 1, 1, Tk)
        m = np.ones((lead[0], 1, 1, Tk), bool)
        m[0, ..., Tk - 1:] = False         # batch 0: last key is padding
        return m
    if kind == "float":                    # additive, with a few -inf
        m = rand(rng, (Tq, Tk), -1.0, 1.0)
        m[:, Tk - 1] = -np.inf if Tk > 1 else 0.0
        return m
    raise AssertionError(kind)


# (name, lead dims, Tq, Tk, d, dv, mask kind, causal)
CASES = [
    ("plain 3-D", (2,), 3, 3, 4, 4, None, False),
    ("bool mask", (2,), 3, 4, 3, 3, "bool", False),
    ("additive float mask", (2,), 3, 4, 3, 3, "float", False),
    ("causal", (2,), 4, 4, 3, 3, None, True),
    ("causal + bool", (1,), 3, 3, 2, 2, "bool", True),
    ("cross Tq != Tk", (2,), 2, 5, 3, 3, None, False),
    ("cross causal Tq < Tk", (1,), 2, 4, 3, 3, None, True),
    ("4-D heads + key padding", (2, 2), 3, 4, 2, 2, "padding", False),
    ("4-D heads + bool", (1, 3), 2, 3, 2, 2, "bool", False),
    ("dv != d", (2,), 3, 4, 2, 5, None, False),
    ("length 1", (1,), 1, 1, 3, 2, None, True),
]


@pytest.mark.parametrize("name,lead,Tq,Tk,d,dv,mask_kind,causal", CASES, ids=[c[0] for c in CASES])
def test_sdpa_against_numpy_and_gradcheck(name, lead, Tq, Tk, d, dv, mask_kind, causal):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    q, k, v = rand(rng, lead + (Tq, d)), rand(rng, lead + (Tk, d)), rand(rng, lead + (Tk, dv))
    mask = _mask(rng, mask_kind, lead, Tq, Tk)
    if mask is None:
        check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                 lambda q, k, v: np_attention(q, k, v, causal=causal), [q, k, v], noncontig=[1])
    else:  # the mask is a constant (grad_inputs excludes it even when it is float)
        check_op(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, is_causal=causal),
                 lambda q, k, v, m: np_attention(q, k, v, m, causal=causal), [q, k, v, mask],
                 grad_inputs=[0, 1, 2])


def test_sdpa_scale_argument():
    rng = np.random.default_rng(1)
    q, k, v = rand(rng, (2, 3, 4)), rand(rng, (2, 3, 4)), rand(rng, (2, 3, 4))
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3),
             lambda q, k, v: np_attention(q, k, v, scale=0.3), [q, k, v])


@pytest.mark.parametrize("fused", [True, False])
def test_fully_masked_row_gives_zeros_and_zero_grads(fused):
    rng = np.random.default_rng(2)
    q = mt.tensor(rand(rng, (2, 3, 4)), requires_grad=True)
    k = mt.tensor(rand(rng, (2, 4, 4)), requires_grad=True)
    v = mt.tensor(rand(rng, (2, 4, 4)), requires_grad=True)
    keep = rng.random((2, 3, 4)) < 0.7
    keep[..., 0] = True
    keep[0, 1, :] = False                                  # batch 0, query 1 attends to nothing
    mask = mt.tensor(keep)
    out = F.scaled_dot_product_attention(q, k, v, mask, fused=fused)
    o = out.numpy()
    assert np.all(o[0, 1] == 0.0), "a fully masked query row must give exactly zeros"
    assert np.isfinite(o).all()
    np.testing.assert_allclose(o, np_attention(q.numpy(), k.numpy(), v.numpy(), keep), rtol=1e-10, atol=1e-12)
    (out * mt.tensor(rng.standard_normal(o.shape))).sum().backward()
    for t in (q, k, v):
        assert np.isfinite(t.grad.numpy()).all()
    assert np.all(q.grad.numpy()[0, 1] == 0.0)
    # no key/value gets a gradient through the dead row: it equals the gradient without that row
    assert mt.autograd.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, fused=fused),
                                 [q, k, v])


def test_every_row_masked_by_float_minus_inf():
    q = mt.tensor(np.ones((1, 2, 2)), requires_grad=True)
    k = mt.tensor(np.ones((1, 3, 2)), requires_grad=True)
    v = mt.tensor(np.ones((1, 3, 2)), requires_grad=True)
    m = mt.tensor(np.full((2, 3), -np.inf))
    out = F.scaled_dot_product_attention(q, k, v, m)
    assert np.all(out.numpy() == 0.0)
    out.sum().backward()
    for t in (q, k, v):
        assert np.all(t.grad.numpy() == 0.0)


# ----------------------------------------------------------------------------- fused vs composed, float32
# (lead, Tq, Tk, d, dv, mask kind, causal)
F32_CASES = [
    ((4,), 16, 16, 8, 8, None, False),
    ((2, 3), 7, 9, 4, 6, "bool", False),
    ((3,), 12, 12, 16, 16, None, True),
    ((2, 2), 5, 5, 8, 8, "padding", True),
    ((2,), 6, 10, 8, 3, "float", False),
    ((1,), 1, 1, 4, 4, None, False),
    ((3,), 1, 7, 4, 4, "bool", False),
    ((2,), 9, 1, 4, 5, None, False),
    ((1, 2), 200, 300, 16, 16, "padding", True),   # > SMALL_T: the tiled CPU path
    ((2,), 257, 140, 8, 8, "bool", False),
]


@pytest.mark.parametrize("lead,Tq,Tk,d,dv,mask_kind,causal", F32_CASES)
def test_fused_matches_composed_float32(lead, Tq, Tk, d, dv, mask_kind, causal):
    rng = np.random.default_rng(Tq * 100 + Tk * 10 + d)
    arrays = [rng.standard_normal(lead + (Tq, d)), rng.standard_normal(lead + (Tk, d)),
              rng.standard_normal(lead + (Tk, dv))]
    m = _mask(rng, mask_kind, lead, Tq, Tk)
    mask = None if m is None else mt.tensor(m if m.dtype == bool else m.astype(np.float32))
    g = rng.standard_normal(lead + (Tq, dv)).astype(np.float32)
    results = []
    for fused in (True, False):
        ts = [mt.tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
        out = F.scaled_dot_product_attention(*ts, mask, is_causal=causal, fused=fused)
        assert out.dtype is mt.float32
        (out * mt.tensor(g)).sum().backward()
        results.append([out.numpy()] + [t.grad.numpy() for t in ts])
    for what, a, b in zip(("output", "dq", "dk", "dv"), *results):
        assert a.dtype == np.float32 and b.dtype == np.float32
        scale = float(np.abs(b).max(initial=1.0))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale, err_msg=f"fused vs composed: {what}")


# ----------------------------------------------------------------------------- learnable mask
def test_learnable_float_mask_gets_gradient():
    rng = np.random.default_rng(3)
    q, k, v = (mt.tensor(rand(rng, s), requires_grad=True) for s in ((2, 3, 4), (2, 4, 4), (2, 4, 2)))
    bias = mt.tensor(rand(rng, (3, 4), -0.5, 0.5), requires_grad=True)   # broadcast over the batch
    out = F.scaled_dot_product_attention(q, k, v, bias)
    np.testing.assert_allclose(out.numpy(), np_attention(q.numpy(), k.numpy(), v.numpy(), bias.numpy()),
                               rtol=1e-10, atol=1e-12)
    out.sum().backward()
    assert bias.grad is not None and bias.grad.shape == (3, 4)
    assert np.abs(bias.grad.numpy()).max() > 0
    assert mt.autograd.gradcheck(lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, b), [q, k, v, bias])


# ----------------------------------------------------------------------------- bad input
def _t(*shape, dtype=mt.float64):
    return mt.zeros(*shape, dtype=dtype)


def test_mismatched_head_dims_name_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 3, 5\)"):
        F.scaled_dot_product_attention(_t(2, 3, 4), _t(2, 3, 5), _t(2, 3, 5))


def test_mismatched_key_value_lengths():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 5, 4\)"):
        F.scaled_dot_product_attention(_t(2, 3, 4), _t(2, 3, 4), _t(2, 5, 4))


def test_mismatched_batch_dims_name_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(3, 3, 4\)"):
        F.scaled_dot_product_attention(_t(2, 3, 4), _t(3, 3, 4), _t(3, 3, 4))


def test_non_float_input_names_dtype():
    with pytest.raises(TypeError, match="int64"):
        F.scaled_dot_product_attention(mt.zeros(2, 3, 4, dtype=mt.int64), _t(2, 3, 4), _t(2, 3, 4))


def test_mixed_float_dtypes_name_dtypes():
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        F.scaled_dot_product_attention(_t(2, 3, 4, dtype=mt.float32), _t(2, 3, 4), _t(2, 3, 4))


def test_mask_of_wrong_shape_or_dtype():
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        F.scaled_dot_product_attention(_t(2, 3, 4), _t(2, 3, 4), _t(2, 3, 4), mt.ones(5, 5, dtype=mt.bool))
    with pytest.raises(TypeError, match="int64"):
        F.scaled_dot_product_attention(_t(2, 3, 4), _t(2, 3, 4), _t(2, 3, 4), mt.ones(3, 3, dtype=mt.int64))


# ----------------------------------------------------------------------------- padding masks on (B, H, T, d)
def _count_fused_calls(monkeypatch):
    """Patch the fused Function's ``apply`` to record the bias of each call."""
    cls = ScaledDotProductAttention
    orig, biases = cls.apply, []

    def apply(*args, **kwargs):
        biases.append(args[3])
        return orig(*args, **kwargs)

    monkeypatch.setattr(cls, "apply", apply)
    return biases


@pytest.mark.parametrize("kernels", ["numba"], indirect=True)   # the reference kernels hold (T, T) scores by design
def test_padding_mask_runs_per_batch_without_materialising_the_mask(kernels, monkeypatch):
    """A (B, 1, 1, Tk) padding mask over heads is never expanded to B·H·T·T floats."""
    import tracemalloc
    monkeypatch.setattr(functional_attention, "_MASK_COPY_LIMIT", 0)
    B, H, T, d = 2, 8, 512, 16
    rng = np.random.default_rng(0)
    q, k, v = (mt.tensor(rng.standard_normal((B, H, T, d)).astype(np.float32)) for _ in range(3))
    lengths = np.array([T, T // 3])
    mask = mt.tensor(np.arange(T)[None, :] < lengths[:, None]).reshape(B, 1, 1, T)
    F.scaled_dot_product_attention(q, k, v, mask)          # compile the kernels outside the measurement

    biases = _count_fused_calls(monkeypatch)
    tracemalloc.start()
    try:
        out = F.scaled_dot_product_attention(q, k, v, mask)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    flat_mask = B * H * T * T * 4
    assert peak < flat_mask / 3, f"peak {peak / 2**20:.1f} MiB, a flattened mask alone is {flat_mask / 2**20:.1f} MiB"
    assert len(biases) == B, f"expected one fused call per batch index, got {len(biases)}"
    assert all(b.strides[:2] == (0, 0) for b in biases), "the mask slice was copied"

    ref = F.scaled_dot_product_attention(q, k, v, mask, fused=False)
    assert out.shape == (B, H, T, d) and out.dtype is mt.float32
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask_shape", ["padding", "per_query"])
def test_per_batch_path_gradcheck(kernels, monkeypatch, mask_shape):
    """The per-batch path (mask copy limit 0) against NumPy and float64 central differences."""
    monkeypatch.setattr(functional_attention, "_MASK_COPY_LIMIT", 0)
    B, H, T, d = 2, 3, 4, 3
    rng = np.random.default_rng(11)
    if mask_shape == "padding":
        mask = (np.arange(T)[None, :] < np.array([T, 2])[:, None]).reshape(B, 1, 1, T)
    else:
        mask = rng.random((B, 1, T, T)) < 0.6
        mask[..., 0] = True                     # every query keeps at least one key
    q, k, v = (rand(rng, (B, H, T, d)) for _ in range(3))
    biases = _count_fused_calls(monkeypatch)
    check_op(lambda a, b, c, m: F.scaled_dot_product_attention(a, b, c, m),
             lambda a, b, c, m: np_attention(a, b, c, m), [q, k, v, mask], noncontig=True)
    assert biases and all(b.shape == (H, T, T) for b in biases), "the per-batch path was not taken"

    qt, kt, vt = (mt.tensor(x) for x in (q, k, v))
    fused = F.scaled_dot_product_attention(qt, kt, vt, mt.tensor(mask))
    composed = F.scaled_dot_product_attention(qt, kt, vt, mt.tensor(mask), fused=False)
    np.testing.assert_allclose(fused.numpy(), composed.numpy(), rtol=1e-10, atol=1e-12)
