"""The backward engine's fast paths: gradients that meet at a node (a residual stream) are summed
in place into memory the engine owns — never into an array an op, a hook or the caller still
holds — with the same values as a sum into a new array."""
import numpy as np
import pytest

import minitrans as mt
from minitrans.autograd import Function

# NumPy adds in place into a temporary operand that nothing else references, for arrays of
# 256 KiB and more: the gradients below are 512 KiB.
SHAPE = (512, 256)


def _numpy_sums_temporaries_in_place() -> bool:
    sums = {0: np.ones(SHAPE, np.float32)}
    address = sums[0].ctypes.data
    return (sums.pop(0) + np.ones(SHAPE, np.float32)).ctypes.data == address


needs_elision = pytest.mark.skipif(not _numpy_sums_temporaries_in_place(),
                                   reason="this NumPy build does not reuse temporaries (no in-place sums to check)")


class Scale(Function):
    """x · k; the backward returns a new array and records its address."""
    returned: list = []

    @staticmethod
    def forward(ctx, x, k):
        ctx.k = k
        return x * x.dtype.type(k)

    @staticmethod
    def backward(ctx, g):
        out = g * g.dtype.type(ctx.k)
        Scale.returned.append(out.ctypes.data)
        return out, None


class Probe(Function):
    """The identity; the backward records the address (and a copy) of the gradient it receives."""
    received: list = []

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        Probe.received.append((g.ctypes.data, g.copy()))
        return g


class Keep(Function):
    """x · 2 whose backward keeps the array it returns (as an op with a cache might)."""
    kept: list = []

    @staticmethod
    def forward(ctx, x):
        return x * x.dtype.type(2)

    @staticmethod
    def backward(ctx, g):
        out = g * g.dtype.type(2)
        Keep.kept.append(out)
        return out


@pytest.fixture(autouse=True)
def _clear_records():
    for lst in (Scale.returned, Probe.received, Keep.kept):
        lst.clear()
    yield


def _leaf(seed=0, dtype=np.float32):
    return mt.tensor(np.random.default_rng(seed).standard_normal(SHAPE).astype(dtype), requires_grad=True)


@needs_elision
def test_two_gradients_meeting_at_a_node_are_summed_into_one_of_them():
    x = _leaf()
    a = Probe.apply(x)
    (Scale.apply(a, 2.0) + Scale.apply(a, 3.0)).sum().backward()
    (address, g), = Probe.received
    assert address in Scale.returned        # no new array for the sum: it went into the first gradient
    np.testing.assert_array_equal(g, np.full(SHAPE, 5.0, np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), np.full(SHAPE, 5.0, np.float32))


@needs_elision
def test_later_gradients_are_added_into_the_engines_buffer():
    x = _leaf()
    a = Probe.apply(x)
    (Scale.apply(a, 2.0) + Scale.apply(a, 3.0) + Scale.apply(a, 5.0) + Scale.apply(a, 7.0)).sum().backward()
    (address, g), = Probe.received
    assert address == Scale.returned[0]     # one buffer for all four, the first gradient's
    np.testing.assert_array_equal(g, np.full(SHAPE, 17.0, np.float32))


def test_sums_match_a_float64_reference_on_a_residual_stream():
    rng = np.random.default_rng(1)
    w1, w2 = (rng.standard_normal((SHAPE[1], SHAPE[1])) / 16 for _ in range(2))
    x = mt.tensor(rng.standard_normal(SHAPE), requires_grad=True)
    h1 = x + (x @ mt.tensor(w1)).relu()                  # two pre-LN-like residual blocks
    h2 = h1 + (h1 @ mt.tensor(w2)).tanh()
    (h2 * h2).sum().backward()
    # the same derivative written out by hand
    xv = x.numpy()
    z1 = xv @ w1
    h1v = xv + np.maximum(z1, 0)
    z2 = h1v @ w2
    h2v = h1v + np.tanh(z2)
    d2 = 2 * h2v
    d1 = d2 + ((d2 * (1 - np.tanh(z2) ** 2)) @ w2.T)
    dx = d1 + ((d1 * (z1 > 0)) @ w1.T)
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-10, atol=1e-10)


def test_an_array_an_op_still_holds_is_never_written():
    x = _leaf()
    a = Probe.apply(x)
    (Keep.apply(a) + Keep.apply(a) + Keep.apply(a)).sum().backward()
    assert len(Keep.kept) == 3
    for kept in Keep.kept:                  # each op's own 2·1, untouched by the sums
        np.testing.assert_array_equal(kept, np.full(SHAPE, 2.0, np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), np.full(SHAPE, 6.0, np.float32))


def test_a_gradient_passed_through_to_two_inputs_is_not_summed_into():
    # Add hands one array to both inputs: the sum at the shared node must not change the other's
    x = _leaf()
    a = Probe.apply(x)
    b = Probe.apply(a)
    seen = []
    b.register_hook(lambda g: seen.append(g.numpy()))
    (a + b).sum().backward()
    np.testing.assert_array_equal(seen[0], np.ones(SHAPE, np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), np.full(SHAPE, 2.0, np.float32))


def test_the_callers_gradient_is_never_written():
    x = _leaf()
    a = Probe.apply(x)
    y = a + a * 3.0 + a
    gradient = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    before = gradient.copy()
    y.backward(mt.tensor(gradient))
    np.testing.assert_array_equal(gradient, before)
    np.testing.assert_allclose(x.grad.numpy(), 5 * before, rtol=1e-6)


def test_retained_and_hooked_gradients_keep_their_values():
    x = _leaf()
    a = Probe.apply(x)
    b = Scale.apply(a, 2.0)
    b.retain_grad()
    c = Scale.apply(b, 1.0)
    (c + b + b).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), np.full(SHAPE, 3.0, np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), np.full(SHAPE, 6.0, np.float32))


def test_retain_graph_backward_twice_gives_the_same_sums():
    x = _leaf()
    a = Probe.apply(x)
    y = (Scale.apply(a, 2.0) + Scale.apply(a, 3.0) + a).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_array_equal(first, np.full(SHAPE, 6.0, np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), 2 * first)


def test_a_leaf_used_several_times_gets_the_sum_in_a_private_array():
    x = _leaf()
    y = Keep.apply(x) + Keep.apply(x) + x * 4.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(SHAPE, 8.0, np.float32))
    for kept in Keep.kept:
        np.testing.assert_array_equal(kept, np.full(SHAPE, 2.0, np.float32))
        assert not np.shares_memory(kept, x.grad.numpy())
    x.grad.numpy()[...] = 0                 # the leaf's gradient is its own
    for kept in Keep.kept:
        np.testing.assert_array_equal(kept, np.full(SHAPE, 2.0, np.float32))


@pytest.mark.parametrize("b_first", [True, False])
def test_a_retained_gradient_passed_through_is_not_summed_into(b_first):
    x = _leaf()
    a = Probe.apply(x)
    b = Probe.apply(a)                      # its backward hands its gradient (b.grad) on to a unchanged
    b.retain_grad()
    terms = [Scale.apply(b, 2.0), Scale.apply(a, 3.0)]
    # the walk takes the last input first: with b's branch walked first, b.grad's array is the
    # partial sum at a's node when the other gradient arrives
    (terms[1] + terms[0] if b_first else terms[0] + terms[1]).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), np.full(SHAPE, 2.0, np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), np.full(SHAPE, 5.0, np.float32))
