"""The CUDA backend behaves like the CPU backend where they used to disagree: views share
storage (and so the autograd version counter), a matmul with an empty contraction gives
zeros, ``clip`` writes in place, ``set_kernels("reference")`` routes the fused ops to the
NumPy oracle, index-range errors carry the CPU message, and the primitives ``from_numpy``,
``dropout_mask``, ``copy_many`` and ``clip_grad_norm_flat`` follow their documented contract.
Expected values come from the CPU backend or from NumPy, never from the code under test."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import minitrans as mt  # noqa: E402
import minitrans.nn.functional as F  # noqa: E402
from minitrans.backends.cpu import CPUBackend  # noqa: E402
from minitrans.backends.cuda import CUDABackend  # noqa: E402
from minitrans.kernels.cuda._util import counters  # noqa: E402

CU = CUDABackend


def _host(a):
    return CU.to_numpy(a)


def _dev(a):
    return CU.from_numpy(np.asarray(a))


# ---------------------------------------------------------------- views share storage
VIEWS = {
    "reshape": lambda a: CU.reshape(a, (12,)),
    "method_reshape": lambda a: a.reshape(2, 6),
    "transpose": lambda a: CU.transpose(a),
    "T": lambda a: a.T,
    "getitem_slice": lambda a: a[1:, ::2],
    "getitem_int": lambda a: a[2],
    "getitem_none_ellipsis": lambda a: a[None, ..., 1],
    "broadcast_to": lambda a: CU.broadcast_to(a[:1], (5, 4, 3)),
    "split_at": lambda a: CU.split_at(a, [1, 3], axis=0)[1],
    "moveaxis": lambda a: CU.moveaxis(a, 0, 1),
    "squeeze": lambda a: a[:1].squeeze(),
    "ravel": lambda a: a.ravel(),
    "view_of_view": lambda a: a[1:].T[::2],
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_every_view_shares_storage_with_its_base(name):
    a = _dev(np.arange(12.0).reshape(4, 3))
    v = VIEWS[name](a)
    assert CU.shares_storage(v, a) and CU.shares_storage(a, v)


FRESH = {
    "copy": lambda a: CU.copy(a),
    "method_copy": lambda a: a.copy(),
    "astype": lambda a: a.astype(np.float32),
    "arith": lambda a: a + 0,
    "reshape_needing_copy": lambda a: a.T.reshape(-1),
    "flatten": lambda a: a.flatten(),
    "ascontiguous_of_transpose": lambda a: CU.ascontiguousarray(a.T),
    "concatenate": lambda a: CU.concatenate([a, a]),
    "advanced_index": lambda a: a[CU.from_numpy(np.array([0, 2]))],
    "zeros_like": lambda a: CU.zeros_like(a),
}


@pytest.mark.parametrize("name", sorted(FRESH))
def test_fresh_arrays_share_no_storage(name):
    a = _dev(np.arange(12.0).reshape(4, 3))
    r = FRESH[name](a)
    assert not CU.shares_storage(r, a) and not CU.shares_storage(a, r)


def test_views_of_different_allocations_do_not_share():
    a, b = _dev(np.ones((2, 2))), _dev(np.ones((2, 2)))
    assert not CU.shares_storage(a[0], b[0])
    assert CU.shares_storage(a[0], a[1])  # two views of one allocation


PUBLIC_VIEWS = {
    "reshape": lambda x: x.reshape(12),
    "transpose": lambda x: x.transpose(0, 1),
    "slice": lambda x: x[1:],
    "index": lambda x: x[0],
    "expand": lambda x: x[:1].expand(3, 4, 3),
    "permute": lambda x: x.permute(1, 0),
    "unsqueeze_squeeze": lambda x: x.unsqueeze(0).squeeze(0),
    "chunk": lambda x: x.chunk(2, dim=0)[1],
    "flatten": lambda x: x.flatten(),
}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", sorted(PUBLIC_VIEWS))
def test_in_place_edit_of_a_saved_view_is_detected(device, name):
    x = mt.randn(4, 3, device=device)
    w = mt.randn(1, device=device, requires_grad=True)
    y = PUBLIC_VIEWS[name](x) * w      # Mul saves the view
    x.add_(1.0)                        # ... whose storage changes through the base
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.sum().backward()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_in_place_edit_through_a_view_of_a_detached_leaf_is_detected(device):
    x = mt.randn(4, 3, device=device, requires_grad=True)
    y = (x * x).sum()                  # Mul saves x
    v = x.detach()[0]
    v.add_(1.0)                        # edits x's storage through a view of its detached alias
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


# ---------------------------------------------------------------- matmul K = 0
@pytest.mark.parametrize("sa,sb", [((3, 0), (0, 4)), ((2, 3, 0), (0, 5)), ((0,), (0,)), ((0,), (0, 2))])
def test_matmul_with_empty_contraction_is_zeros(sa, sb):
    a, b = np.ones(sa, np.float32), np.ones(sb, np.float32)
    want = CPUBackend.matmul(a, b)
    got = CU.matmul(_dev(a), _dev(b))
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(_host(got), want)


def test_matmul_with_empty_contraction_through_the_public_api_gives_zero_gradients():
    a = mt.ones(3, 0, device="cuda", requires_grad=True)
    b = mt.ones(0, 4, device="cuda", requires_grad=True)
    y = a @ b
    np.testing.assert_array_equal(y.numpy(), np.zeros((3, 4), np.float32))
    y.sum().backward()
    assert a.grad.shape == (3, 0) and b.grad.shape == (0, 4)


# ---------------------------------------------------------------- clip in place
@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (None, 0.25), (-0.25, None)])
def test_clip_with_out_writes_in_place(lo, hi):
    host = np.linspace(-1, 1, 12).reshape(3, 4)
    a = _dev(host)
    r = CU.clip(a, lo, hi, out=a)
    assert r is a
    np.testing.assert_array_equal(_host(a), CPUBackend.clip(host.copy(), lo, hi))


def test_clip_is_one_launch_and_into_a_strided_view():
    host = np.linspace(-1, 1, 12).reshape(3, 4)
    a = _dev(host)
    before = counters.launches
    CU.clip(a, -0.5, 0.5, out=a)
    assert counters.launches - before == 1
    col = a[:, 1]                     # a strided view: written through to a
    b = _dev(np.linspace(-3, 3, 12).reshape(3, 4))
    CU.clip(col, 0.0, 0.1, out=col)
    want = CPUBackend.clip(host.copy(), -0.5, 0.5)
    want[:, 1] = np.clip(want[:, 1], 0.0, 0.1)
    np.testing.assert_array_equal(_host(a), want)
    np.testing.assert_array_equal(_host(b), np.linspace(-3, 3, 12).reshape(3, 4))


@pytest.mark.parametrize("host,lo,hi", [
    (np.arange(-3, 4), 0.5, None),                               # int array, float bound: float64 result
    (np.arange(-3, 4), -1, 2),                                   # ints stay int64
    (np.linspace(-1, 1, 6).astype(np.float32), -0.5, 0.25),     # weak Python floats keep float32
    (np.array([np.nan, -2.0, 2.0]), -1.0, 1.0),                  # NaN propagates
    (np.linspace(-1, 1, 6).reshape(2, 3), np.array([[-0.5], [0.0]]), 0.5),   # an array bound
])
def test_clip_result_values_and_dtype_match_the_cpu(host, lo, hi):
    want = CPUBackend.clip(host, lo, hi)
    got = CU.clip(_dev(host), lo, hi)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(_host(got), want)


def test_clip_without_bounds_raises_the_cpu_error():
    with pytest.raises(ValueError) as cpu:
        CPUBackend.clip(np.ones(2), None, None)
    with pytest.raises(ValueError) as cuda:
        CU.clip(_dev(np.ones(2)), None, None)
    assert str(cuda.value) == str(cpu.value)


def test_tensor_clamp_in_place_on_cuda():
    host = np.linspace(-2, 2, 10).astype(np.float32)
    t = mt.tensor(host, device="cuda")
    v = t._version_counter[0]
    assert t.clamp_(-1.0, 0.5) is t
    assert t._version_counter[0] == v + 1
    np.testing.assert_array_equal(t.numpy(), np.clip(host, -1.0, 0.5))


# ---------------------------------------------------------------- set_kernels("reference")
def _fused_calls(xp):
    r = np.random.default_rng(0)
    x = r.standard_normal((4, 6)).astype(np.float32)
    t = np.array([1, 0, 5, 2])
    q = r.standard_normal((2, 3, 4)).astype(np.float32)
    w, b = np.ones(6, np.float32), np.zeros(6, np.float32)
    up = (lambda a: a) if xp is CPUBackend else _dev
    loss, lse = xp.cross_entropy_forward(up(x), up(t), -100, 0.1)
    o, alse = xp.attention_forward(up(q), up(q), up(q), None, True, 0.5)
    return [xp.softmax_forward(up(x)), xp.log_softmax_forward(up(x)), loss, lse,
            *xp.layer_norm_forward(up(x), up(w), up(b), 1e-5), o, alse]


def test_reference_kernels_on_cuda_match_the_cpu_reference_and_launch_no_fused_kernel():
    mt.set_kernels("reference")
    try:
        assert CU.get_kernels() == "reference"
        want = [np.asarray(a) for a in _fused_calls(CPUBackend)]
        counters.launched.clear()
        got = _fused_calls(CU)
        fused = [k for k in counters.launched if k.split(".")[0] in
                 ("softmax", "cross_entropy", "layer_norm", "attention", "adam")]
        assert fused == []
        for g, w_ in zip(got, want):
            assert isinstance(g, CU.ndarray) and g.dtype == w_.dtype and g.shape == w_.shape
            np.testing.assert_array_equal(_host(g), w_)
    finally:
        mt.set_kernels("numba")
    assert CU.get_kernels() == "numba"


def test_reference_adam_on_cuda_updates_the_device_arrays_in_place():
    r = np.random.default_rng(1)
    host = [r.standard_normal(5).astype(np.float32) for _ in range(3)]
    host.append(np.abs(r.standard_normal(5)).astype(np.float32))   # the second moment is non-negative
    cpu = [h.copy() for h in host]
    dev = [_dev(h) for h in host]
    mt.set_kernels("reference")
    try:
        CPUBackend.adam_step(cpu[0], cpu[1], cpu[2], cpu[3], 1e-2, 0.9, 0.999, 1e-8, 0.01, 3, True)
        CU.adam_step(dev[0], dev[1], dev[2], dev[3], 1e-2, 0.9, 0.999, 1e-8, 0.01, 3, True)
    finally:
        mt.set_kernels("numba")
    for c, d in zip(cpu, dev):
        np.testing.assert_array_equal(_host(d), c)
    assert not np.array_equal(cpu[0], host[0])


def test_set_kernels_rejects_an_unknown_name_like_the_cpu():
    with pytest.raises(ValueError) as cpu:
        CPUBackend.set_kernels("fast")
    with pytest.raises(ValueError) as cuda:
        CU.set_kernels("fast")
    assert str(cuda.value) == str(cpu.value)


# ---------------------------------------------------------------- index range
@pytest.mark.parametrize("idx", [[0, 3, 4], [-1, 2], [5]])
def test_check_index_range_raises_the_cpu_message_at_the_next_host_read(idx):
    idx = np.array(idx, np.int64)
    with pytest.raises(IndexError) as cpu:
        CPUBackend.check_index_range(idx, 4, "embedding")
    CU.check_index_range(_dev(idx), 4, "embedding")  # queued: raises nothing yet
    with pytest.raises(IndexError) as cuda:
        CU.to_numpy(_dev(np.zeros(100)))  # a large read: the checks come back in a transfer of their own
    assert str(cuda.value) == str(cpu.value)
    np.testing.assert_array_equal(CU.to_numpy(_dev(np.arange(3.0))), np.arange(3.0))  # the error is not sticky


def test_check_index_range_with_ignore_raises_the_loss_message():
    target = np.array([0, -100, 7], np.int64)
    with pytest.raises(IndexError) as cpu:
        CPUBackend.check_index_range(target, 3, "nll_loss", -100)
    CU.check_index_range(_dev(target), 3, "nll_loss", -100)
    with pytest.raises(IndexError) as cuda:
        CU.to_numpy(_dev(np.zeros(1)))
    assert str(cuda.value) == str(cpu.value) == "nll_loss: target values must be in [0, 3) or ignore_index=-100; found 7"
    CU.check_index_range(_dev(np.array([-100, -100], np.int64)), 3, "nll_loss", -100)  # all ignored: fine
    assert CU.to_numpy(_dev(np.ones(1))).tolist() == [1.0]


def test_check_index_range_waits_for_nothing_until_a_read_which_brings_every_check_at_once():
    before = counters.syncs
    for _ in range(3):
        CU.check_index_range(_dev(np.array([0, 3, 1], np.int64)), 4, "embedding")
    CU.check_index_range(_dev(np.zeros(0, np.int64)), 4, "embedding")
    assert counters.syncs - before == 0
    assert CU.to_numpy(_dev(np.array([2.5]))).tolist() == [2.5]  # small: value and checks in one transfer
    assert counters.syncs - before == 1
    CU.check_index_range(_dev(np.array([1], np.int64)), 4, "embedding")
    CU.to_numpy(_dev(np.zeros(1000)))  # large: one transfer for the checks, one for the value
    assert counters.syncs - before == 3


@pytest.mark.parametrize("host", [np.array(True), np.array([-1, 2, 3], np.int64), np.array(2.5),
                                  np.arange(16, dtype=np.float32).reshape(4, 4), np.arange(12, dtype=np.int8)[::3]])
def test_a_small_read_with_checks_pending_returns_the_value_in_the_same_transfer(host):
    CU.check_index_range(_dev(np.array([0, 1], np.int64)), 2, "embedding")
    dev = _dev(np.arange(12, dtype=np.int8))[::3] if host.dtype == np.int8 else _dev(host)
    before = counters.syncs
    got = CU.to_numpy(dev)
    assert counters.syncs - before == 1
    assert got.dtype == host.dtype and got.shape == host.shape
    np.testing.assert_array_equal(got, host)


def test_check_index_range_reads_early_only_when_every_slot_is_taken():
    from minitrans.backends.cuda.pending_checks import SLOTS

    before = counters.syncs
    idx = _dev(np.array([0, 1], np.int64))
    for _ in range(SLOTS):
        CU.check_index_range(idx, 2, "embedding")
    assert counters.syncs - before == 0
    CU.check_index_range(idx, 2, "embedding")
    assert counters.syncs - before == 1
    CU.to_numpy(_dev(np.zeros(1)))


# ---------------------------------------------------------------- from_numpy / dropout / many-array primitives
@pytest.mark.parametrize("copy", [False, True])
def test_from_numpy_takes_copy_and_never_aliases_host_memory(copy):
    host = np.arange(6.0).reshape(2, 3)
    d = CU.from_numpy(host, copy=copy)
    host[0, 0] = 99.0
    np.testing.assert_array_equal(_host(d), np.arange(6.0).reshape(2, 3))
    assert d.dtype == np.float64 and d.shape == (2, 3)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_mask_values_dtype_and_seed(p):
    m = CU.dropout_mask((50, 40), p, 12345, np.float32)
    assert m.shape == (50, 40) and m.dtype == np.float32
    h = _host(m)
    if p == 1.0:
        assert not h.any()
        return
    assert set(np.unique(h)) <= {np.float32(0), np.float32(1 / (1 - p))}
    assert abs((h == 0).mean() - p) < 0.05
    np.testing.assert_array_equal(_host(CU.dropout_mask((50, 40), p, 12345, np.float32)), h)
    if p:
        assert not np.array_equal(_host(CU.dropout_mask((50, 40), p, 54321, np.float32)), h)


def test_copy_many_copies_every_pair_like_the_cpu():
    r = np.random.default_rng(2)
    srcs = [r.standard_normal((2, 3)), r.standard_normal(4).astype(np.float32), np.arange(6).reshape(3, 2)]
    cpu_dst = [np.zeros_like(s) for s in srcs] + [np.zeros((3, 2))]
    cpu_src = srcs + [np.arange(6.0).reshape(2, 3).T]
    CPUBackend.copy_many(cpu_dst, cpu_src)
    dst = [CU.zeros_like(_dev(d)) for d in cpu_dst]
    CU.copy_many(dst, [_dev(s) for s in srcs] + [_dev(np.arange(6.0).reshape(2, 3)).T])
    for d, c in zip(dst, cpu_dst):
        assert d.dtype == c.dtype
        np.testing.assert_array_equal(_host(d), c)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_flat_matches_the_cpu(norm_type, max_norm):
    host = np.random.default_rng(3).standard_normal(37).astype(np.float32)
    cpu = host.copy()
    want = CPUBackend.clip_grad_norm_flat(cpu, max_norm, norm_type)
    dev = _dev(host)
    got = CU.clip_grad_norm_flat(dev, max_norm, norm_type)
    assert got.shape == () and got.dtype == want.dtype
    np.testing.assert_allclose(_host(got), want, rtol=1e-6)
    np.testing.assert_allclose(_host(dev), cpu, rtol=1e-6)



# ---------------------------------------------------------------- indexing against NumPy
INDICES = {
    "int": (1,), "negative_int": (-1, 2), "slices": (slice(1, None), slice(None, None, 2)),
    "none_ellipsis": (None, Ellipsis, 0), "array": (np.array([2, 0, 2]),),
    "array_and_slice": (slice(None), np.array([[1], [0]])),
    "arrays_apart": (np.array([0, 1]), slice(None), np.array([3, 0])),   # index axes go first
    "arrays_adjacent": (slice(None), np.array([0, 2]), np.array([1, 1])),
    "int_among_arrays": (np.array([1, 0]), 2, slice(1, 3)),
    "negative_array": (np.array([-1, -2]),),
    "bool_mask": (np.array([True, False, True]),),
}


@pytest.mark.parametrize("name", sorted(INDICES))
def test_getitem_and_setitem_match_numpy(name):
    host = np.arange(3 * 4 * 5, dtype=np.float64).reshape(3, 4, 5)
    idx = INDICES[name]
    want = host[idx]
    got = _dev(host)[idx]
    assert got.shape == want.shape
    np.testing.assert_array_equal(_host(got), want)
    target, dev = host.copy(), _dev(host)
    target[idx] = -7.0
    dev[idx] = -7.0
    np.testing.assert_array_equal(_host(dev), target)


@pytest.mark.parametrize("idx,message", [((0, 0, 0, 0), "too many indices"), ((5,), "out of bounds"),
                                         ((np.array([0, 3]),), "out of bounds"),
                                         ((Ellipsis, Ellipsis), "single ellipsis")])
def test_bad_indices_raise_numpy_errors(idx, message):
    host = np.zeros((3, 4, 5))
    with pytest.raises(IndexError, match=message):
        host[idx]
    with pytest.raises(IndexError, match=message):
        _dev(host)[idx]


def _public_step(kernels_name):
    """Loss and input gradients of layer norm -> attention -> log-softmax -> cross-entropy on cuda."""
    mt.set_kernels(kernels_name)
    try:
        r = np.random.default_rng(4)
        x = mt.tensor(r.standard_normal((2, 3, 4)), dtype=mt.float64, device="cuda", requires_grad=True)
        w = mt.tensor(r.standard_normal(4), dtype=mt.float64, device="cuda", requires_grad=True)
        h = F.layer_norm(x, (4,), w, None)
        a = F.scaled_dot_product_attention(h, h, h, is_causal=True)
        logits = F.log_softmax(a.reshape(6, 4), dim=-1) + F.softmax(a.reshape(6, 4), dim=-1)
        loss = F.cross_entropy(logits, mt.tensor(np.array([0, 3, 1, 2, 0, 1]), device="cuda"), label_smoothing=0.1)
        loss.backward()
        return loss.item(), x.grad.numpy(), w.grad.numpy()
    finally:
        mt.set_kernels("numba")


def test_reference_kernels_through_the_public_api_agree_with_the_device_kernels():
    got = _public_step("reference")
    want = _public_step("numba")
    assert got[0] == pytest.approx(want[0], rel=1e-10)
    for g, w_ in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, w_, rtol=1e-8, atol=1e-10)
