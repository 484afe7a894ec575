"""The fused nn ops through ``check_op`` over hypothesis-drawn shapes.

softmax / log_softmax along a drawn dim, layer_norm, cross_entropy and embedding, each
against a NumPy formula written here, with float64 gradcheck, a float32 run and
transposed (non-contiguous) inputs. Shapes include size-0 leading (batch) dims and
size-1 dims; the CPU kernel mode (``numba`` / ``reference``) is drawn too.
"""
import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minitrans as mt
import minitrans.nn.functional as F
from helpers import check_op, distinct, examples, rand

SEEDS = st.integers(0, 2**32 - 1)
KERNELS = st.sampled_from(["numba", "reference"])


def _with_kernels(mode, fn):
    before = mt.get_kernels()
    mt.set_kernels(mode)
    try:
        fn()
    finally:
        mt.set_kernels(before)


@st.composite
def batched_shape(draw, min_dims=1, max_dims=3, keep=()):
    """A shape with sides 1..4 whose leading (batch) dim may be 0, unless that dim is in ``keep``."""
    shape = list(draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=4)))
    if len(shape) >= 2 and 0 not in keep and draw(st.booleans()):
        shape[0] = 0
    return tuple(shape)


# ----------------------------------------------------------------------------- softmax, log_softmax
def np_log_softmax(x, axis):
    if x.size == 0:
        return x.copy()
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@st.composite
def softmax_case(draw):
    ndim = draw(st.integers(1, 3))
    dim = draw(st.integers(-ndim, ndim - 1))
    shape = draw(batched_shape(ndim, ndim, keep=(dim % ndim,)))
    return shape, dim


@settings(max_examples=examples(80), deadline=None)
@given(case=softmax_case(), seed=SEEDS, log=st.booleans(), noncontig=st.booleans(), mode=KERNELS)
def test_softmax_log_softmax(case, seed, log, noncontig, mode):
    shape, dim = case
    x = rand(np.random.default_rng(seed), shape, -3, 3)
    if log:
        fn, ref = (lambda a: F.log_softmax(a, dim)), (lambda a: np_log_softmax(a, dim))
    else:
        fn, ref = (lambda a: F.softmax(a, dim=dim)), (lambda a: np.exp(np_log_softmax(a, dim)))
    _with_kernels(mode, lambda: check_op(fn, ref, [x], noncontig=noncontig))


# ----------------------------------------------------------------------------- layer_norm
def np_layer_norm(x, k, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    if x.size == 0:
        y = x.copy()
    else:
        mu = x.mean(axis=axes, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mu) / np.sqrt(var + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


@st.composite
def layer_norm_case(draw):
    norm = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    lead = list(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    if lead and draw(st.booleans()):
        lead[0] = 0
    return tuple(lead) + norm, norm


@settings(max_examples=examples(80), deadline=None)
@given(case=layer_norm_case(), seed=SEEDS, affine=st.sampled_from(["none", "weight", "bias", "both"]),
       noncontig=st.booleans(), mode=KERNELS)
def test_layer_norm(case, seed, affine, noncontig, mode):
    shape, norm = case
    rng = np.random.default_rng(seed)
    x = distinct(rng, shape) if int(np.prod(shape)) else np.zeros(shape)  # no near-constant rows
    w = rand(rng, norm, 0.5, 1.5) if affine in ("weight", "both") else None
    b = rand(rng, norm) if affine in ("bias", "both") else None
    k = len(norm)
    check = lambda: check_op(lambda a, ww, bb: F.layer_norm(a, norm, ww, bb),
                             lambda a, ww, bb: np_layer_norm(a, k, ww, bb),
                             [x, w, b], noncontig=noncontig)
    _with_kernels(mode, check)


# ----------------------------------------------------------------------------- cross_entropy
def np_cross_entropy(x, t, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """PyTorch's formula: (1−ε)·(−log p[t]) + ε·mean_c(−log p[c]) per kept position; mean over kept ones."""
    logp = np_log_softmax(x, 1) if x.size else x.copy()
    C = x.shape[1]
    keep = t != ignore_index
    tt = np.where(keep, t, 0)
    nll = -np.take_along_axis(logp, tt[:, None], axis=1)[:, 0]
    smooth = -logp.mean(axis=1) if C else np.zeros_like(nll)
    loss = np.where(keep, (1 - label_smoothing) * nll + label_smoothing * smooth, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / keep.sum()


@st.composite
def cross_entropy_case(draw):
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    n = draw(st.integers(0 if reduction != "mean" else 1, 4))
    c = draw(st.integers(1, 5))
    extra = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=1)))   # (N, C) or (N, C, d)
    ignore_index = draw(st.sampled_from([-100, 0, 2]))
    tshape = (n,) + extra
    t = np.asarray(draw(hnp.arrays(np.int64, tshape, elements=st.integers(0, c - 1))), np.int64)
    if t.size:
        ignored = draw(hnp.arrays(np.bool_, tshape))
        t = np.where(ignored, ignore_index, t).astype(np.int64)
    if reduction == "mean":
        assume((t != ignore_index).any())   # mean over nothing is NaN, as in PyTorch
    ls = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    return (n, c) + extra, t, ignore_index, reduction, ls


@settings(max_examples=examples(120), deadline=None)
@given(case=cross_entropy_case(), seed=SEEDS, noncontig=st.booleans(), mode=KERNELS)
def test_cross_entropy(case, seed, noncontig, mode):
    shape, t, ii, reduction, ls = case
    x = rand(np.random.default_rng(seed), shape, -3, 3)

    def fn(a, tgt):
        return F.cross_entropy(a, tgt, ignore_index=ii, reduction=reduction, label_smoothing=ls)

    def ref(a, tgt):
        if a.ndim > 2:   # (N, C, d) -> (N·d, C) rows, targets (N·d,)
            rows = np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
            out = np_cross_entropy(rows, tgt.reshape(-1), ii, reduction, ls)
            return out.reshape(tgt.shape) if reduction == "none" else out
        return np_cross_entropy(a, tgt, ii, reduction, ls)

    _with_kernels(mode, lambda: check_op(fn, ref, [x, t], noncontig=noncontig))


# ----------------------------------------------------------------------------- embedding
@st.composite
def embedding_case(draw):
    v, d = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    ishape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5))
    idx = np.asarray(draw(hnp.arrays(np.int64, ishape, elements=st.integers(0, v - 1))), np.int64)
    if idx.size >= 2:
        idx.reshape(-1)[-1] = idx.reshape(-1)[0]   # at least one repeated index
    padding_idx = draw(st.none() | st.integers(0, v - 1))
    return (v, d), idx, padding_idx


@settings(max_examples=examples(80), deadline=None)
@given(case=embedding_case(), seed=SEEDS, noncontig=st.booleans())
def test_embedding(case, seed, noncontig):
    wshape, idx, padding_idx = case
    w = rand(np.random.default_rng(seed), wshape)
    check_op(lambda ww, i: F.embedding(i, ww), lambda ww, i: ww[i], [w, idx], noncontig=noncontig)

    # the gradient is a scatter-add over repeated indices; the padding_idx row gets none
    weight = mt.tensor(w, requires_grad=True)
    g = np.random.default_rng(seed + 1).standard_normal(idx.shape + (wshape[1],))
    out = F.embedding(mt.tensor(idx), weight, padding_idx=padding_idx)
    np.testing.assert_array_equal(out.numpy(), w[idx])
    (out * mt.tensor(g)).sum().backward()
    expect = np.zeros(wshape)
    np.add.at(expect, idx.reshape(-1), g.reshape(-1, wshape[1]))
    if padding_idx is not None:
        expect[padding_idx] = 0.0
    np.testing.assert_allclose(weight.grad.numpy(), expect, rtol=1e-12, atol=1e-12)
