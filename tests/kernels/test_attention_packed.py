"""The CPU kernels of multi-head self-attention on the packed (B, T, 3·E) projection, and the
``PackedSelfAttention`` op that runs them, against a float64 NumPy reference written here."""
import numpy as np
import pytest

import minitrans as mt
from minitrans.autograd.gradcheck import gradcheck
from minitrans.backends.cpu import CPUBackend
from minitrans.kernels.cpu import attention_packed as packed
from minitrans.ops.attention import PackedSelfAttention

SIZES = [(1, 1, 1, 1), (2, 17, 2, 7), (1, 64, 4, 32), (3, 5, 3, 1), (2, 9, 1, 32), (2, 33, 2, 16)]   # B, T, H, hd


def reference(qkv, heads, bias, causal, scale, g):
    """out (B, T, E), lse (B·H, T) and the qkv gradient for the output gradient g, in float64 by
    the textbook formulas on explicitly split heads."""
    B, T, E3 = qkv.shape
    E = E3 // 3
    hd = E // heads
    q, k, v = (qkv[:, :, i * E:(i + 1) * E].astype(np.float64).reshape(B, T, heads, hd).transpose(0, 2, 1, 3)
               for i in range(3))
    s = scale * q @ k.transpose(0, 1, 3, 2)
    if bias is not None:
        s = s + np.broadcast_to(bias, (B * heads, T, T)).reshape(B, heads, T, T)
    if causal:
        s = s + np.triu(np.full((T, T), -np.inf), 1)
    m = s.max(-1, keepdims=True)
    visible = np.isfinite(m)
    e = np.where(visible, np.exp(s - np.where(visible, m, 0)), 0.0)
    tot = e.sum(-1, keepdims=True)
    p = np.where(tot > 0, e / np.where(tot > 0, tot, 1), 0.0)
    lse = np.where(tot > 0, m + np.log(np.where(tot > 0, tot, 1)), -np.inf)[..., 0].reshape(B * heads, T)
    o = p @ v
    go = g.astype(np.float64).reshape(B, T, heads, hd).transpose(0, 2, 1, 3)
    dp = go @ v.transpose(0, 1, 3, 2)
    ds = p * (dp - (go * o).sum(-1, keepdims=True))
    grads = (scale * ds @ k, scale * ds.transpose(0, 1, 3, 2) @ q, p.transpose(0, 1, 3, 2) @ go)
    dqkv = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, E) for d in grads], axis=-1)
    return o.transpose(0, 2, 1, 3).reshape(B, T, E), lse, dqkv


def run(qkv, heads, bias, causal, scale, g):
    """out, lse and the qkv gradient; the gradient from the forward's kept probabilities and the one
    recomputed from lse must agree (both backward paths run). Past WHOLE_UNIT_T, P is never kept and
    only the recomputing backward runs."""
    out, lse, pt = packed.packed_attention_forward(qkv, heads, bias, causal, scale)
    if qkv.shape[1] > packed.WHOLE_UNIT_T:
        assert pt is None
        return out, lse, packed.packed_attention_backward(qkv, out, lse, g, heads, bias, causal, scale)
    assert pt is not None               # these sizes are small enough to keep P
    kept = pt.copy()
    dqkv = packed.packed_attention_backward(qkv, out, lse, g, heads, bias, causal, scale, pt)
    np.testing.assert_array_equal(pt, kept)            # the backward only reads the kept P
    again = packed.packed_attention_backward(qkv, out, lse, g, heads, bias, causal, scale)
    tol = 1e-12 if qkv.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(again, dqkv, rtol=tol, atol=tol)
    return out, lse, dqkv


_SAME = object()        # the reference takes the bias the kernels take


def _matches_reference(qkv, heads, bias, causal, scale, g, reference_bias=_SAME):
    """The kernels' out, lse and dqkv against the float64 reference (given ``reference_bias`` when
    the kernels take the bias in another form, e.g. broadcast); returns the kernels' results."""
    got = run(qkv, heads, bias, causal, scale, g)
    want = reference(qkv, heads, bias if reference_bias is _SAME else reference_bias, causal, scale, g)
    for name, a, b in zip(("out", "lse", "dqkv"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
    return got


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B,T,H,hd", SIZES)
def test_matches_reference_float64(rng, B, T, H, hd, causal):
    qkv = rng.normal(size=(B, T, 3 * H * hd))
    g = rng.normal(size=(B, T, H * hd))
    scale = 1.0 / np.sqrt(hd)
    got = run(qkv, H, None, causal, scale, g)
    for name, a, b in zip(("out", "lse", "dqkv"), got, reference(qkv, H, None, causal, scale, g)):
        assert a.dtype == np.float64 and a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B,T,H,hd", SIZES[1:3])
def test_float32_stays_float32(rng, B, T, H, hd, causal):
    qkv = rng.normal(size=(B, T, 3 * H * hd)).astype(np.float32)
    g = rng.normal(size=(B, T, H * hd)).astype(np.float32)
    got = run(qkv, H, None, causal, 0.3, g)
    for name, a, b in zip(("out", "lse", "dqkv"), got, reference(qkv, H, None, causal, 0.3, g)):
        assert a.dtype == np.float32, name
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("per_unit", [False, True])
def test_bias_with_masked_keys_and_a_fully_masked_row(rng, per_unit):
    B, T, H, hd = 2, 6, 2, 3
    qkv = rng.normal(size=(B, T, 3 * H * hd))
    g = rng.normal(size=(B, T, H * hd))
    bias = rng.normal(size=(B * H if per_unit else 1, T, T))
    bias[:, :, 2] = -np.inf            # key 2 hidden from every query
    bias[0, 3, :] = -np.inf            # unit 0 (or every unit), query 3: no visible key
    got = run(qkv, H, bias, True, 0.5, g)
    want = reference(qkv, H, bias, True, 0.5, g)
    for name, a, b in zip(("out", "lse", "dqkv"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
    assert np.all(got[0][0, 3, :hd] == 0) and got[1][0, 3] == -np.inf


def test_bias_broadcast_over_units_reads_one_matrix(rng):
    """A (T, T) mask broadcast to (B·H, T, T) with stride 0, as MultiheadAttention passes it."""
    B, T, H, hd = 3, 7, 2, 4
    qkv = rng.normal(size=(B, T, 3 * H * hd))
    g = rng.normal(size=(B, T, H * hd))
    mask = np.where(rng.random((1, T, T)) < 0.3, -np.inf, rng.normal(size=(1, T, T)))
    np.fill_diagonal(mask[0], 0.0)
    _matches_reference(qkv, H, np.broadcast_to(mask, (B * H, T, T)), False, 0.4, g, reference_bias=mask)


def test_non_contiguous_inputs(rng):
    """qkv a strided slice of a wider array, g a transposed copy's view: the same results."""
    B, T, H, hd = 2, 11, 2, 5
    wide = rng.normal(size=(B, T, 3 * H * hd + 4))
    qkv = wide[:, :, 2:-2]
    g = np.ascontiguousarray(rng.normal(size=(T, B, H * hd))).transpose(1, 0, 2)
    assert not qkv.flags.c_contiguous and not g.flags.c_contiguous
    _matches_reference(qkv, H, None, True, 0.4, g)


def test_results_do_not_depend_on_the_thread_count(rng, monkeypatch):
    """Several chunks (B·H·T² well over CHUNK_BYTES) on one thread and spread over two: bit for bit
    the same, and the two-thread run does hand chunks to the worker pool."""
    B, T, H, hd = 9, 64, 4, 32
    qkv = rng.normal(size=(B, T, 3 * H * hd))
    g = rng.normal(size=(B, T, H * hd))
    assert len(packed._chunks(B, H, T, 8)) > 2
    handed = []
    real_pool = packed.worker_pool
    monkeypatch.setattr(packed, "worker_pool", lambda n: handed.append(n) or real_pool(n))
    with mt.num_threads(1):
        one = run(qkv, H, None, True, 0.3, g)
    try:
        with mt.num_threads(2), mt.threads.limit_blas_threads(1):   # the setting that splits work
            two = run(qkv, H, None, True, 0.3, g)
    except ValueError:
        pytest.skip("Numba's pool has one thread here (NUMBA_NUM_THREADS=1): nothing to compare")
    assert handed, "two threads: the chunks should be spread over the worker pool"
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------- longer sequences: query-row blocks
LONG_SIZES = [(2, 129, 2, 8), (1, 200, 3, 5), (2, 300, 2, 16)]      # B, T, H, hd; T > WHOLE_UNIT_T


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B,T,H,hd", LONG_SIZES)
def test_long_sequences_match_reference_float64(rng, B, T, H, hd, causal):
    assert T > packed.WHOLE_UNIT_T and len(packed._query_blocks(T, causal)) > 1
    qkv = rng.normal(size=(B, T, 3 * H * hd))
    g = rng.normal(size=(B, T, H * hd))
    got = run(qkv, H, None, causal, 1.0 / np.sqrt(hd), g)
    for name, a, b in zip(("out", "lse", "dqkv"), got, reference(qkv, H, None, causal, 1.0 / np.sqrt(hd), g)):
        assert a.dtype == np.float64 and a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence_float32_stays_float32(rng, causal):
    B, T, H, hd = 2, 200, 2, 16
    qkv = rng.normal(size=(B, T, 3 * H * hd)).astype(np.float32)
    g = rng.normal(size=(B, T, H * hd)).astype(np.float32)
    got = run(qkv, H, None, causal, 0.25, g)
    for name, a, b in zip(("out", "lse", "dqkv"), got, reference(qkv, H, None, causal, 0.25, g)):
        assert a.dtype == np.float32, name
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("per_unit", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence_bias_with_masked_keys_and_fully_masked_rows(rng, per_unit, causal):
    """A mask that hides a key from every query and every key from a query in two different query
    blocks; the block's bias is read at the block's query offset."""
    B, T, H, hd = 2, 300, 2, 4
    qkv = rng.normal(size=(B, T, 3 * H * hd))
    g = rng.normal(size=(B, T, H * hd))
    bias = rng.normal(size=(B * H if per_unit else 1, T, T))
    bias[:, :, 2] = -np.inf            # key 2 hidden from every query
    bias[0, 3, :] = -np.inf            # unit 0 (or every unit), query 3 (first block): no visible key
    bias[0, 250, :] = -np.inf          # ... and query 250 (a later block)
    got = _matches_reference(qkv, H, bias, causal, 0.5, g)
    assert np.all(got[0][0, [3, 250], :hd] == 0) and np.all(got[1][0, [3, 250]] == -np.inf)


def test_long_sequence_one_head_per_piece(rng, monkeypatch):
    """Pieces of single heads (a tiny CHUNK_BYTES): a later head of a batch item starts a piece, and
    reads its own bias, lse and columns."""
    monkeypatch.setattr(packed, "CHUNK_BYTES", 1)
    B, T, H, hd = 2, 150, 3, 4
    assert packed._head_pieces(B, H, T, True, 8)[1] == (0, 1, 2)
    qkv = rng.normal(size=(B, T, 3 * H * hd))
    g = rng.normal(size=(B, T, H * hd))
    bias = rng.normal(size=(B * H, T, T))
    _matches_reference(qkv, H, bias, True, 0.5, g)


def test_long_sequence_non_contiguous_inputs(rng):
    B, T, H, hd = 2, 200, 2, 5
    wide = rng.normal(size=(B, T, 3 * H * hd + 4))
    qkv = wide[:, :, 2:-2]
    g = np.ascontiguousarray(rng.normal(size=(T, B, H * hd))).transpose(1, 0, 2)
    assert not qkv.flags.c_contiguous and not g.flags.c_contiguous
    for causal in (False, True):
        _matches_reference(qkv, H, None, causal, 0.4, g)


def test_causal_blocks_skip_the_masked_keys():
    """Each causal query block reads keys only up to its last query; the blocks cover every query
    once, the one that sees every key first (it writes dK and dV, the others add)."""
    T = 1000
    for causal in (False, True):
        blocks = packed._query_blocks(T, causal)
        assert blocks[0][1] == T and blocks[0][2] == T
        assert sorted(q for i0, i1, _ in blocks for q in range(i0, i1)) == list(range(T))
        assert all(kend == (i1 if causal else T) for _, i1, kend in blocks)
    skipped = sum(T - kend for _, _, kend in packed._query_blocks(T, True))
    assert skipped * (T // len(packed._query_blocks(T, True))) > T * T / 3     # over a third of Sᵀ


def test_long_sequence_results_do_not_depend_on_the_thread_count(rng, monkeypatch):
    B, T, H, hd = 2, 260, 2, 8
    qkv = rng.normal(size=(B, T, 3 * H * hd)).astype(np.float32)
    g = rng.normal(size=(B, T, H * hd)).astype(np.float32)
    handed = []
    real_pool = packed.worker_pool
    monkeypatch.setattr(packed, "worker_pool", lambda n: handed.append(n) or real_pool(n))
    with mt.num_threads(1):
        one = run(qkv, H, None, True, 0.3, g)
    try:
        with mt.num_threads(2), mt.threads.limit_blas_threads(1):
            two = run(qkv, H, None, True, 0.3, g)
    except ValueError:
        pytest.skip("Numba's pool has one thread here (NUMBA_NUM_THREADS=1): nothing to compare")
    assert handed, "two threads: the units should be spread over the worker pool"
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("heads", [0, 4, 2.0])
def test_bad_head_count_is_refused(heads):
    with pytest.raises(ValueError, match="heads"):
        packed.packed_attention_forward(np.zeros((1, 2, 18)), heads, None, False, 1.0)


def test_probabilities_are_kept_only_while_small():
    assert packed._keeps_probs(np.empty((32, 64, 384), np.float32), 4)          # W1: P 2 MiB, qkv 3 MiB
    assert not packed._keeps_probs(np.empty((2, 128, 12), np.float32), 4)       # P 32× qkv: recomputed
    assert not packed._keeps_probs(np.empty((1, 160, 3000), np.float32), 1)     # small, but query blocks
    out, lse, pt = packed.packed_attention_forward(np.zeros((2, 128, 12)), 4, None, True, 1.0)
    assert pt is None


def test_bad_bias_shape_is_refused():
    with pytest.raises(ValueError, match=r"bias must be \(1 or 4, 3, 3\)"):
        packed.packed_attention_forward(np.zeros((2, 3, 12)), 2, np.zeros((3, 3, 3)), False, 1.0)


# ------------------------------------------------------------------------------ the op
@pytest.mark.parametrize("causal", [False, True])
def test_op_gradcheck_float64_on_the_packed_kernel(rng, causal):
    B, T, H, hd = 2, 5, 2, 3
    qkv = mt.tensor(rng.normal(size=(B, T, 3 * H * hd)), requires_grad=True)
    bias = rng.normal(size=(1, T, T))
    assert CPUBackend.packed_attention_forward(qkv.detach().numpy(), H, bias, causal, 0.5) is not None
    assert gradcheck(lambda x: PackedSelfAttention.apply(x, H, bias, causal, 0.5), (qkv,))


@pytest.mark.parametrize("causal", [False, True])
def test_op_gradcheck_float64_on_a_longer_sequence(rng, causal):
    """T > WHOLE_UNIT_T: the query-row blocks, their causal key ranges and the dK, dV sums."""
    B, T, H, hd = 1, 140, 1, 2
    qkv = mt.tensor(rng.normal(size=(B, T, 3 * H * hd)), requires_grad=True)
    bias = rng.normal(size=(1, T, T))
    assert CPUBackend.packed_attention_forward(qkv.detach().numpy(), H, bias, causal, 0.5) is not None
    assert gradcheck(lambda x: PackedSelfAttention.apply(x, H, bias, causal, 0.5), (qkv,))


def test_op_long_sequence_and_reference_kernels_compose_the_same(rng):
    """T > PACKED_MAX_T (no packed kernel) and the reference kernels: the composed path, same results."""
    T = packed.PACKED_MAX_T + 3
    qkv = rng.normal(size=(1, T, 6))
    g = rng.normal(size=(1, T, 2))
    assert CPUBackend.packed_attention_forward(qkv, 2, None, True, 0.7) is None
    want_out, _, want_grad = reference(qkv, 2, None, True, 0.7, g)
    x = mt.tensor(qkv, requires_grad=True)
    out = PackedSelfAttention.apply(x, 2, None, True, 0.7)
    out.backward(mt.tensor(g))
    np.testing.assert_allclose(out.detach().numpy(), want_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), want_grad, rtol=1e-10, atol=1e-12)

    short = rng.normal(size=(2, 4, 6))
    gs = rng.normal(size=(2, 4, 2))
    want_out, _, want_grad = reference(short, 2, None, False, 0.7, gs)
    mt.backends.set_kernels("reference")
    try:
        assert CPUBackend.packed_attention_forward(short, 2, None, False, 0.7) is None
        x = mt.tensor(short, requires_grad=True)
        out = PackedSelfAttention.apply(x, 2, None, False, 0.7)
        out.backward(mt.tensor(gs))
    finally:
        mt.backends.set_kernels("numba")
    np.testing.assert_allclose(out.detach().numpy(), want_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), want_grad, rtol=1e-10, atol=1e-12)


def test_op_refuses_a_bad_shape_with_one_message():
    with pytest.raises(ValueError, match=r"qkv must be \(B, T, 3 \* heads \* head_dim\)"):
        PackedSelfAttention.apply(mt.tensor(np.zeros((2, 3, 10))), 2, None, False, 1.0)
