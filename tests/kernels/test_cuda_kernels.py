"""CUDA kernels against their NumPy references (Numba simulator, tiny shapes, tiny tiles)."""
import importlib
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numba import cuda  # noqa: E402

from minitrans.kernels import cuda as K  # noqa: E402
from minitrans.kernels import reference as ref  # noqa: E402

# the package re-exports functions named like some modules (matmul, reduce): fetch modules by path
(adam, attention, cross_entropy, elementwise, index_range, layer_norm, matmul, reduce, softmax) = (
    importlib.import_module(f"minitrans.kernels.cuda.{m}") for m in
    ["adam", "attention", "cross_entropy", "elementwise", "index_range", "layer_norm", "matmul",
     "reduce", "softmax"])

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}

# Small tiles so that tiny shapes still span several blocks and partial tiles, and the
# simulator (one Python thread per CUDA thread) stays fast.
SMALL_TILES = {
    elementwise: dict(THREADS=32), adam: dict(THREADS=32),
    reduce: dict(THREADS=4), softmax: dict(THREADS=8), cross_entropy: dict(THREADS=8),
    layer_norm: dict(THREADS=8, COL_THREADS=4),
    matmul: dict(TILE_M=8, TILE_N=8, TILE_K=4, MICRO_M=2, MICRO_N=4),
    attention: dict(BLOCK_Q=4, BLOCK_K=4),
}

DEFAULT_TILES = {m: {k: getattr(m, k) for k in kv} for m, kv in SMALL_TILES.items()}


@pytest.fixture(autouse=True, scope="module")
def small_tiles():
    saved = {m: {k: getattr(m, k) for k in kv} for m, kv in SMALL_TILES.items()}
    for m, kv in SMALL_TILES.items():
        for k, v in kv.items():
            setattr(m, k, v)
    yield
    for m, kv in saved.items():
        for k, v in kv.items():
            setattr(m, k, v)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def host(d):
    return d.copy_to_host()


def close(got, want, dtype):
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, **TOL[dtype])


# ------------------------------------------------------------------------- elementwise
POSITIVE = {"log", "sqrt", "reciprocal"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (3, 5), (2, 3, 4), (1, 2, 1, 3, 1, 2)])
def test_unary(rng, dtype, shape):
    for op in K.UNARY:
        x = rng.standard_normal(shape).astype(dtype)
        if op in POSITIVE:
            x = np.abs(x) + 0.1
        close(host(K.unary(op, dev(x))), ref.unary(op, x).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unary_strided_view(rng, dtype):
    x = rng.standard_normal((4, 7)).astype(dtype)
    d = dev(x)
    close(host(K.unary("exp", d[1:, ::3])), np.exp(x[1:, ::3]), dtype)
    close(host(K.unary("identity", d.T)), x.T.copy(), dtype)  # materialise a transpose


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sa,sb", [((3, 1, 5), (4, 1)), ((1,), (2, 3)), ((2, 3), (2, 3)), ((), (3,))])
def test_binary_broadcast(rng, dtype, sa, sb):
    for op in K.BINARY:
        a = np.asarray(rng.standard_normal(sa)).astype(dtype)
        b = np.asarray(rng.standard_normal(sb)).astype(dtype)
        if op == "pow":
            a = np.abs(a) + 0.5
        if op in K.COMPARISONS:
            b = np.where(rng.random(sb) < 0.3, np.broadcast_to(a.reshape(-1)[0], sb), b).astype(dtype)
        got, want = host(K.binary(op, dev(a), dev(b))), ref.binary(op, a, b)
        if op in K.COMPARISONS:
            assert got.dtype == np.bool_ and (got == want).all(), op
        else:
            close(got, want.astype(dtype), dtype)


def test_binary_mixed_dtype_and_out(rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4,))
    got = K.binary("mul", dev(a), dev(b))
    assert got.dtype == np.float64
    close(host(got), a * b, np.float64)
    acc = dev(a)
    K.binary("add", acc, dev(a), out=acc)  # in-place accumulate
    close(host(acc), 2 * a, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_where(rng, dtype):
    c = rng.random((3, 1, 4)) > 0.5
    a = rng.standard_normal((2, 4)).astype(dtype)
    b = rng.standard_normal((1,)).astype(dtype)
    close(host(K.where(dev(c), dev(a), dev(b))), ref.where(c, a, b), dtype)


# -------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axes", [((1,), None), ((17,), 0), ((3, 2, 5), (0, 2)),
                                        ((2, 3, 5), -1), ((2, 1, 3), (1,)), ((4, 3), None)])
def test_reduce(rng, dtype, shape, axes):
    x = rng.standard_normal(shape).astype(dtype)
    for op, keepdims in [("sum", False), ("mean", True), ("max", True), ("min", False)]:
        got = host(K.reduce(op, dev(x), axes, keepdims))
        close(got, ref.reduce(op, x, axes, keepdims).astype(dtype), dtype)


def test_reduce_strided_view(rng):
    x = rng.standard_normal((5, 6))
    close(host(K.reduce("sum", dev(x)[:, ::2], 0)), x[:, ::2].sum(0), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((1,), 0), ((3, 19), 1), ((19, 3), 0), ((2, 3, 5), 1)])
def test_argmax(rng, dtype, shape, axis):
    x = rng.integers(-3, 3, size=shape).astype(dtype)  # many ties: first index must win
    for keepdims in (False, True):
        got = host(K.argmax(dev(x), axis, keepdims))
        want = ref.argmax(x, axis, keepdims)
        assert got.shape == want.shape and (got == want).all()


# ------------------------------------------------------------------------------ matmul
MATMUL_CASES = [
    ((1, 1), (1, 1), False, False),
    ((17, 9), (9, 11), False, False),
    ((2, 9, 17), (9, 11), True, False),      # Aᵀ·B, B broadcast over the batch
    ((3, 1, 5, 4), (2, 6, 4), False, True),  # A·Bᵀ, 2 batch dims broadcast
    ((9, 3), (5, 9), True, True),
    ((1, 20), (20, 1), False, False),
    ((17, 33), (33, 9), False, False),       # several tiles and K steps, partial in every direction
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sa,sb,ta,tb", MATMUL_CASES)
def test_matmul(rng, dtype, sa, sb, ta, tb):
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    da, db = dev(a), dev(b)
    da = da.transpose(tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)) if ta else da
    db = db.transpose(tuple(range(b.ndim - 2)) + (b.ndim - 1, b.ndim - 2)) if tb else db
    close(host(K.matmul(da, db)), ref.matmul(a, b, ta, tb), dtype)


def test_matmul_transposed_view(rng):
    a = rng.standard_normal((6, 5))
    b = rng.standard_normal((6, 7))
    close(host(K.matmul(dev(a).T, dev(b))), a.T @ b, np.float64)


@pytest.mark.parametrize("wave", [1, 10**9])
def test_matmul_big_and_half_tiles(rng, wave, monkeypatch):
    """Both tilings (the big one whenever it gives ``wave`` blocks), on a batched Aᵀ·Bᵀ."""
    monkeypatch.setattr(matmul, "WAVE_BLOCKS", wave)
    a = rng.standard_normal((2, 13, 17)).astype(np.float32)
    b = rng.standard_normal((10, 13)).astype(np.float32)
    big, small = matmul.tile_configs()
    assert matmul.tiles_for(17, 10, 2) == (big if wave == 1 else small) and big != small
    close(host(K.matmul(dev(a).transpose((0, 2, 1)), dev(b).T)), a.transpose(0, 2, 1) @ b.T, np.float32)


def test_matmul_operands_without_a_unit_stride(rng):
    """Every other column of a wider array (A) and every other row (B): neither stride is 1."""
    a = rng.standard_normal((9, 14)).astype(np.float32)
    b = rng.standard_normal((14, 11)).astype(np.float32)
    da, db = dev(a)[:, ::2], dev(b)[::2, :]
    assert not da.is_c_contiguous() and not db.is_c_contiguous()
    close(host(K.matmul(da, db)), a[:, ::2] @ b[::2, :], np.float32)
    close(host(K.matmul(db.T, da.T)), (a[:, ::2] @ b[::2, :]).T, np.float32)  # both k-major


# fused row ops (softmax, layer norm, cross-entropy): tests/kernels/test_cuda_rows.py


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("n", [1, 37])
def test_adam_step(rng, dtype, decoupled, n):
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = rng.standard_normal(n).astype(dtype), rng.random(n).astype(dtype)
    dp, dg, dm, dv = dev(p), dev(g), dev(m), dev(v)
    args = (1e-2, 0.9, 0.999, 1e-8, 0.1, 3, decoupled)
    K.adam_step(dp, dg, dm, dv, *args)
    ref.adam_step(p, g, m, v, *args)
    for d, h in [(dp, p), (dm, m), (dv, v)]:
        close(host(d), h, dtype)


# ---------------------------------------------------------------------------- attention
ATTN_CASES = [  # B, Tq, Tk, d, dv, causal, bias kind
    (1, 1, 1, 1, 1, False, None),
    (2, 5, 7, 3, 4, False, None),
    (2, 9, 9, 4, 4, True, None),
    (1, 6, 10, 3, 2, True, "pad"),   # Tk > Tq, causal + key padding
    (2, 10, 6, 2, 3, False, "pad"),  # a fully masked row in batch 1
    (2, 5, 7, 3, 3, False, "full"),  # a dense (1, Tq, Tk) bias broadcast over the batch
]


def _bias(rng, kind, B, Tq, Tk, dtype):
    if kind is None:
        return None
    if kind == "pad":  # (B, 1, Tk): key padding; batch 1 keeps no key -> fully masked rows
        m = np.zeros((B, 1, Tk), dtype=dtype)
        m[0, 0, Tk - 2:] = -np.inf
        if B > 1:
            m[1, 0, :] = -np.inf
        return m
    m = rng.standard_normal((1, Tq, Tk)).astype(dtype)
    m[0, 1, :] = -np.inf
    return m


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,Tq,Tk,d,dv,causal,kind", ATTN_CASES)
def test_attention(rng, dtype, B, Tq, Tk, d, dv, causal, kind):
    q = rng.standard_normal((B, Tq, d)).astype(dtype)
    k = rng.standard_normal((B, Tk, d)).astype(dtype)
    v = rng.standard_normal((B, Tk, dv)).astype(dtype)
    do = rng.standard_normal((B, Tq, dv)).astype(dtype)
    bias = _bias(rng, kind, B, Tq, Tk, dtype)
    bias_view = None if bias is None else np.broadcast_to(bias, (B, Tq, Tk))
    bias_dev = None if bias is None else dev(bias)
    scale = 1.0 / np.sqrt(d)
    o, lse = K.attention_forward(dev(q), dev(k), dev(v), bias_dev, causal, scale)
    wo, wlse = ref.attention_forward(q, k, v, bias_view, causal, scale)
    close(host(o), wo, dtype)
    close(host(lse), wlse, dtype)  # -inf on fully masked rows compares equal
    assert np.isfinite(host(o)).all()
    grads = K.attention_backward(dev(q), dev(k), dev(v), dev(wo), dev(wlse), dev(do), bias_dev,
                                 causal, scale)
    want = ref.attention_backward(q, k, v, wo, wlse, do, bias_view, causal, scale)
    for g, e in zip(grads, want):
        close(host(g), e, dtype)


def test_default_tile_sizes(rng):
    """One launch per tiled kernel at the modules' real tile sizes (shared-memory shapes)."""
    small = {m: {k: getattr(m, k) for k in kv} for m, kv in SMALL_TILES.items()}
    try:
        for m, kv in DEFAULT_TILES.items():
            for k, v in kv.items():
                setattr(m, k, v)
        a, b = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal((5, 2)).astype(np.float32)
        close(host(K.matmul(dev(a), dev(b))), a @ b, np.float32)
        x = rng.standard_normal((2, 3))
        close(host(K.softmax_forward(dev(x))), ref.softmax_forward(x), np.float64)
        q = rng.standard_normal((1, 3, 2))
        o, lse = K.attention_forward(dev(q), dev(q), dev(q), None, True, 0.5)
        close(host(o), ref.attention_forward(q, q, q, None, True, 0.5)[0], np.float64)
    finally:
        for m, kv in small.items():
            for k, v in kv.items():
                setattr(m, k, v)


# ------------------------------------------------------------------------- index range
@pytest.mark.parametrize("n", [1, 7, 300, 1025])
@pytest.mark.parametrize("ignore", [None, -100, 3])
def test_index_extremes(rng, n, ignore):
    saved = index_range.THREADS
    index_range.THREADS = 8   # several entries per thread, and a partial last round
    try:
        idx = rng.integers(-50, 50, size=n).astype(np.int64)
        idx[0] = 5                            # one entry no case ignores: the kept extremes exist
        idx[1::3] = -100                      # a loss's ignore_index, left out when asked
        got = host(index_range.index_extremes(dev(idx), ignore))
        only_ignored = host(index_range.index_extremes(dev(np.full(n, 3, np.int64)), 3))
    finally:
        index_range.THREADS = saved
    kept = idx if ignore is None else idx[idx != ignore]
    np.testing.assert_array_equal(got, [kept.min(), kept.max()])
    np.testing.assert_array_equal(got, ref.index_extremes(idx, ignore))
    assert only_ignored[0] > only_ignored[1]   # nothing left: the empty extremes


def test_index_extremes_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="non-empty 1-D C-contiguous int64"):
        index_range.index_extremes(dev(np.zeros(3, np.float32)))
