"""Every differentiable core op through ``check_op``, over hypothesis-drawn shapes.

Shapes include broadcasting pairs, size-1 and size-0 dims; inputs are also handed to the
ops as transposed (non-contiguous) views. Values come from a drawn seed and stay away
from kinks and ties so that central differences are valid.
"""
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minitrans as mt
from minitrans.autograd.gradcheck import gradcheck
from helpers import check_op, distinct, examples, grid, positive, rand

SEEDS = st.integers(0, 2**32 - 1)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
NONEMPTY = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=4)
TRIPLES = hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, min_side=0, max_side=3)


def _gelu_ref(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# ----------------------------------------------------------------------------- unary
# (name, minitrans, NumPy reference, values)
UNARY = [
    ("neg", lambda x: -x, lambda x: -x, rand),
    ("exp", lambda x: x.exp(), np.exp, rand),
    ("mt.exp", lambda x: mt.exp(x), np.exp, rand),
    ("log", lambda x: x.log(), np.log, positive),
    ("sqrt", lambda x: x.sqrt(), np.sqrt, positive),
    ("rsqrt", lambda x: x.rsqrt(), lambda x: 1 / np.sqrt(x), positive),
    ("abs", lambda x: x.abs(), np.abs, grid),
    ("tanh", lambda x: x.tanh(), np.tanh, rand),
    ("sigmoid", lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), rand),
    ("relu", lambda x: x.relu(), lambda x: np.where(x > 0, x, 0.0), grid),
    ("gelu", lambda x: x.gelu(), _gelu_ref, rand),
    ("mt.gelu", lambda x: mt.gelu(x, approximate="tanh"), _gelu_ref, rand),
    ("square", lambda x: x.square(), lambda x: x * x, rand),
    ("pow 3", lambda x: x**3, lambda x: x**3, rand),
    ("pow 2", lambda x: x**2, lambda x: x**2, rand),
    ("pow -1.5", lambda x: x**-1.5, lambda x: x**-1.5, positive),
    ("pow 0.5", lambda x: mt.pow(x, 0.5), np.sqrt, positive),
    ("rpow 2", lambda x: 2.0**x, lambda x: 2.0**x, rand),
    ("rpow e-ish", lambda x: 0.7**x, lambda x: 0.7**x, rand),
    ("clamp", lambda x: x.clamp(-0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5), grid),
    ("clamp min", lambda x: x.clamp(min=-0.5), lambda x: np.maximum(x, -0.5), grid),
    ("clamp max", lambda x: mt.clamp(x, max=0.5), lambda x: np.minimum(x, 0.5), grid),
    ("x+c", lambda x: x + 3.0, lambda x: x + 3.0, rand),
    ("c+x", lambda x: 3.0 + x, lambda x: 3.0 + x, rand),
    ("c-x", lambda x: 1.0 - x, lambda x: 1.0 - x, rand),
    ("x*c", lambda x: x * -2.5, lambda x: x * -2.5, rand),
    ("c/x", lambda x: 2.0 / x, lambda x: 2.0 / x, positive),
    ("x/c", lambda x: x / 4.0, lambda x: x / 4.0, rand),
]


@pytest.mark.parametrize("name,f,ref,values", UNARY, ids=[u[0] for u in UNARY])
@settings(max_examples=examples(36), deadline=None)
@given(shape=SHAPES, seed=SEEDS, noncontig=st.booleans())
def test_unary(name, f, ref, values, shape, seed, noncontig):
    x = values(np.random.default_rng(seed), shape)
    check_op(f, ref, [x], noncontig=noncontig)


# ----------------------------------------------------------------------------- binary, broadcasting
BINARY = [
    ("add", lambda a, b: a + b, lambda a, b: a + b, rand, rand),
    ("mt.add", mt.add, np.add, rand, rand),
    ("sub", lambda a, b: a - b, lambda a, b: a - b, rand, rand),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, rand, rand),
    ("div", lambda a, b: a / b, lambda a, b: a / b, rand, positive),
    ("pow", lambda a, b: a**b, np.power, positive, rand),
    ("maximum", mt.maximum, np.maximum, lambda r, s: grid(r, s, 0.03), lambda r, s: grid(r, s, 0.08)),
    ("minimum", lambda a, b: a.minimum(b), np.minimum, lambda r, s: grid(r, s, 0.03), lambda r, s: grid(r, s, 0.08)),
    ("max(a, b)", lambda a, b: a.max(b), np.maximum, lambda r, s: grid(r, s, 0.03), lambda r, s: grid(r, s, 0.08)),
]


@pytest.mark.parametrize("name,f,ref,va,vb", BINARY, ids=[b[0] for b in BINARY])
@settings(max_examples=examples(48), deadline=None)
@given(shapes=PAIRS, seed=SEEDS, noncontig=st.sampled_from([(), (0,), (1,), (0, 1)]))
def test_binary_broadcast(name, f, ref, va, vb, shapes, seed, noncontig):
    sa, sb = shapes.input_shapes
    rng = np.random.default_rng(seed)
    check_op(f, ref, [va(rng, sa), vb(rng, sb)], noncontig=noncontig)


@pytest.mark.parametrize("name,f,ref,va,vb", BINARY[:6], ids=[b[0] for b in BINARY[:6]])
def test_binary_explicit_broadcast_pairs(name, f, ref, va, vb):
    rng = np.random.default_rng(0)
    for sa, sb in [((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((), (2, 3)), ((1,), (0,)), ((5, 1, 2), (3, 1))]:
        check_op(f, ref, [va(rng, sa), vb(rng, sb)], noncontig=True)


def test_binary_with_only_one_side_requiring_grad():
    rng = np.random.default_rng(1)
    for f, ref in [(lambda a, b: a * b, np.multiply), (lambda a, b: a / b, np.divide),
                   (lambda a, b: a**b, np.power), (lambda a, b: a - b, np.subtract)]:
        a, b = positive(rng, (3, 1)), positive(rng, (2, 1, 4))
        check_op(f, ref, [a, b], grad_inputs=[0])
        check_op(f, ref, [a, b], grad_inputs=[1])


@settings(max_examples=examples(60), deadline=None)
@given(shapes=TRIPLES, seed=SEEDS, scalar=st.sampled_from([None, "input", "other"]))
def test_where(shapes, seed, scalar):
    sc, sa, sb = shapes.input_shapes
    rng = np.random.default_rng(seed)
    cond, a, b = rng.random(sc) > 0.5, rand(rng, sa), rand(rng, sb)
    if scalar == "input":
        check_op(lambda c, y: mt.where(c, 1.5, y), lambda c, y: np.where(c, 1.5, y), [cond, b])
    elif scalar == "other":
        check_op(lambda c, x: mt.where(c, x, -0.5), lambda c, x: np.where(c, x, -0.5), [cond, a])
    else:
        check_op(mt.where, np.where, [cond, a, b], noncontig=True)


@settings(max_examples=examples(60), deadline=None)
@given(shapes=PAIRS, seed=SEEDS, value=st.sampled_from([0.0, -1e9, 2.5]))
def test_masked_fill(shapes, seed, value):
    sx, sm = shapes.input_shapes
    assume(np.broadcast_shapes(sx, sm) == tuple(sx))  # the mask broadcasts to the input, not beyond
    rng = np.random.default_rng(seed)
    x, mask = rand(rng, sx), rng.random(sm) > 0.5
    check_op(lambda t, m: t.masked_fill(m, value), lambda t, m: np.where(m, value, t), [x, mask], noncontig=True)


# ----------------------------------------------------------------------------- reductions
@st.composite
def shape_and_dims(draw, min_side=0):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=min_side, max_side=4))
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or nd == 0:
        dims = None
    elif kind == "int":
        dims = draw(st.integers(-nd, nd - 1))
    else:
        axes = draw(st.lists(st.integers(0, nd - 1), unique=True, min_size=1, max_size=nd))
        dims = tuple(a - nd if draw(st.booleans()) else a for a in axes)  # mix of negative dims
    return shape, dims, draw(st.booleans())


def _np_axes(dims):
    return dims if dims is None or isinstance(dims, int) else tuple(dims)


def _count(shape, dims):
    if dims is None:
        return int(np.prod(shape, dtype=np.int64))
    axes = (dims,) if isinstance(dims, int) else dims
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


@settings(max_examples=examples(90), deadline=None)
@given(sd=shape_and_dims(min_side=0), seed=SEEDS, noncontig=st.booleans())
def test_sum(sd, seed, noncontig):
    shape, dims, keep = sd
    x = rand(np.random.default_rng(seed), shape)
    check_op(lambda t: t.sum(dims, keep), lambda a: np.sum(a, axis=_np_axes(dims), keepdims=keep), [x],
             noncontig=noncontig)
    check_op(lambda t: mt.sum(t, dim=dims, keepdim=keep), lambda a: np.sum(a, axis=_np_axes(dims), keepdims=keep),
             [x])


@settings(max_examples=examples(72), deadline=None)
@given(sd=shape_and_dims(min_side=1), seed=SEEDS, noncontig=st.booleans())
def test_mean(sd, seed, noncontig):
    shape, dims, keep = sd
    x = rand(np.random.default_rng(seed), shape)
    check_op(lambda t: t.mean(dims, keepdim=keep), lambda a: np.mean(a, axis=_np_axes(dims), keepdims=keep), [x],
             noncontig=noncontig)


@settings(max_examples=examples(72), deadline=None)
@given(sd=shape_and_dims(min_side=1), seed=SEEDS, correction=st.sampled_from([0, 1]), noncontig=st.booleans())
def test_var(sd, seed, correction, noncontig):
    shape, dims, keep = sd
    assume(_count(shape, dims) > correction)
    x = rand(np.random.default_rng(seed), shape)
    check_op(lambda t: t.var(dims, keepdim=keep, correction=correction),
             lambda a: np.var(a, axis=_np_axes(dims), keepdims=keep, ddof=correction), [x], noncontig=noncontig)


@pytest.mark.parametrize("name", ["amax", "amin"])
@settings(max_examples=examples(72), deadline=None)
@given(sd=shape_and_dims(min_side=1), seed=SEEDS, noncontig=st.booleans())
def test_amax_amin(name, sd, seed, noncontig):
    shape, dims, keep = sd
    x = distinct(np.random.default_rng(seed), shape)
    ref = np.max if name == "amax" else np.min
    check_op(lambda t: getattr(t, name)(dims, keep), lambda a: ref(a, axis=_np_axes(dims), keepdims=keep), [x],
             noncontig=noncontig)


def test_amax_ties_share_the_gradient():
    x = mt.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], dtype=mt.float64, requires_grad=True)
    x.amax(1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize("name", ["max", "min"])
@settings(max_examples=examples(72), deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), data=st.data(), seed=SEEDS,
       noncontig=st.booleans())
def test_max_min_dim_values_and_indices(name, shape, data, seed, noncontig):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    keep = data.draw(st.booleans())
    x = distinct(np.random.default_rng(seed), shape)
    red, arg = (np.max, np.argmax) if name == "max" else (np.min, np.argmin)

    def f(t):
        r = getattr(t, name)(dim, keepdim=keep)
        assert r.values is r[0] and r.indices is r[1]
        return r.values, r.indices

    check_op(f, lambda a: (red(a, axis=dim, keepdims=keep), arg(a, axis=dim, keepdims=keep)), [x],
             noncontig=noncontig)
    # over everything: one value, no indices
    check_op(lambda t: getattr(t, name)(), lambda a: red(a), [x])


@settings(max_examples=examples(72), deadline=None)
@given(shape=NONEMPTY, data=st.data(), seed=SEEDS)
def test_argmax_argmin_no_grad(shape, data, seed):
    x = distinct(np.random.default_rng(seed), shape)
    dim = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1))) if shape else None
    keep = data.draw(st.booleans()) and dim is not None
    for f, ref in [(mt.argmax, np.argmax), (mt.argmin, np.argmin)]:
        check_op(lambda t: f(t, dim, keep), lambda a: np.asarray(ref(a, axis=dim, keepdims=keep)), [x], grad=False)
    t = mt.tensor(x, requires_grad=True)
    assert not t.argmax().requires_grad


@settings(max_examples=examples(60), deadline=None)
@given(shapes=PAIRS, seed=SEEDS)
def test_comparisons_no_grad(shapes, seed):
    sa, sb = shapes.input_shapes
    rng = np.random.default_rng(seed)
    a, b = grid(rng, sa, 0.0, -0.3, 0.3), grid(rng, sb, 0.0, -0.3, 0.3)  # small grid: plenty of ties
    ops = [(lambda x, y: x < y, np.less), (lambda x, y: x <= y, np.less_equal), (lambda x, y: x > y, np.greater),
           (lambda x, y: x >= y, np.greater_equal), (lambda x, y: x == y, np.equal),
           (lambda x, y: x != y, np.not_equal), (lambda x, y: x.lt(0.0), lambda x, y: x < 0.0)]
    for f, ref in ops:
        check_op(f, ref, [a, b], grad=False, noncontig=True)
    ta = mt.tensor(a, requires_grad=True)
    assert (ta > 0).dtype is mt.bool and not (ta > 0).requires_grad


# ----------------------------------------------------------------------------- matmul
@st.composite
def matmul_shapes(draw):
    m, k, n = (draw(st.integers(0, 4)) for _ in range(3))
    kind = draw(st.sampled_from(["1d1d", "1d2d", "2d1d", "2d2d", "batched", "1d-batched", "batched-1d"]))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=2, max_side=3)).input_shapes
    return {"1d1d": ((k,), (k,)), "1d2d": ((k,), (k, n)), "2d1d": ((m, k), (k,)), "2d2d": ((m, k), (k, n)),
            "batched": (batch[0] + (m, k), batch[1] + (k, n)), "1d-batched": ((k,), batch[1] + (k, n)),
            "batched-1d": (batch[0] + (m, k), (k,))}[kind]


@settings(max_examples=examples(150), deadline=None)
@given(shapes=matmul_shapes(), seed=SEEDS, noncontig=st.sampled_from([(), (0,), (1,), (0, 1)]))
def test_matmul(shapes, seed, noncontig):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, shapes[0]), rand(rng, shapes[1])
    check_op(lambda x, y: x @ y, np.matmul, [a, b], noncontig=noncontig)


def test_matmul_all_forms_explicitly():
    rng = np.random.default_rng(2)
    for sa, sb in [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((2, 1, 2, 3), (5, 3, 2)),
                   ((3,), (2, 3, 4)), ((2, 2, 3), (3,)), ((1, 2, 3), (4, 3, 2))]:
        check_op(mt.matmul, np.matmul, [rand(rng, sa), rand(rng, sb)], noncontig=True)
        check_op(lambda x, y: x.matmul(y), np.matmul, [rand(rng, sa), rand(rng, sb)], grad_inputs=[1])


# ----------------------------------------------------------------------------- shape ops
@settings(max_examples=examples(90), deadline=None)
@given(shape=SHAPES, seed=SEEDS, data=st.data(), noncontig=st.booleans())
def test_reshape_view_flatten(shape, seed, data, noncontig):
    x = rand(np.random.default_rng(seed), shape)
    n = x.size
    targets = [(n,), (-1,), (1, n), tuple(reversed(shape)), (n, 1, 1)]
    if n and n % 2 == 0:
        targets.append((2, -1))
    target = data.draw(st.sampled_from(targets))
    check_op(lambda t: t.reshape(target), lambda a: np.reshape(a, target), [x], noncontig=noncontig)
    check_op(lambda t: t.view(*target), lambda a: np.reshape(a, target), [x], noncontig=noncontig)
    check_op(lambda t: t.flatten(), lambda a: a.reshape(-1), [x])


@settings(max_examples=examples(90), deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=3), seed=SEEDS, data=st.data(),
       noncontig=st.booleans())
def test_transpose_permute(shape, seed, data, noncontig):
    nd = len(shape)
    x = rand(np.random.default_rng(seed), shape)
    d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    perm = data.draw(st.permutations(range(nd)))
    check_op(lambda t: t.transpose(d0, d1), lambda a: np.swapaxes(a, d0, d1), [x], noncontig=noncontig)
    check_op(lambda t: t.permute(*perm), lambda a: np.transpose(a, perm), [x], noncontig=noncontig)
    check_op(lambda t: mt.permute(t, perm), lambda a: np.transpose(a, perm), [x])
    check_op(lambda t: t.T, lambda a: a.T, [x])


@settings(max_examples=examples(90), deadline=None)
@given(shapes=PAIRS, seed=SEEDS, lead=st.integers(0, 2), noncontig=st.booleans())
def test_expand(shapes, seed, lead, noncontig):
    s, other = shapes.input_shapes
    target = tuple(np.broadcast_shapes(s, other))
    target = (2,) * lead + target
    x = rand(np.random.default_rng(seed), s)
    check_op(lambda t: t.expand(*target), lambda a: np.broadcast_to(a, target), [x], noncontig=noncontig)
    # -1 keeps a dim
    t2 = tuple(-1 if i >= len(target) - len(s) and s[i - len(target) + len(s)] == target[i] else d
               for i, d in enumerate(target))
    check_op(lambda t: t.expand(t2), lambda a: np.broadcast_to(a, target), [x])


@settings(max_examples=examples(90), deadline=None)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3), seed=SEEDS, data=st.data(),
       noncontig=st.booleans())
def test_squeeze_unsqueeze(shape, seed, data, noncontig):
    x = rand(np.random.default_rng(seed), shape)
    nd = len(shape)
    check_op(lambda t: t.squeeze(), lambda a: np.squeeze(a), [x], noncontig=noncontig)
    if nd:
        d = data.draw(st.integers(-nd, nd - 1))
        ref = (lambda a: np.squeeze(a, d)) if shape[d] == 1 else (lambda a: a)
        check_op(lambda t: t.squeeze(d), ref, [x], noncontig=noncontig)
    u = data.draw(st.integers(-nd - 1, nd))
    check_op(lambda t: t.unsqueeze(u), lambda a: np.expand_dims(a, u), [x], noncontig=noncontig)
    check_op(lambda t: mt.unsqueeze(t, u), lambda a: np.expand_dims(a, u), [x])


# ----------------------------------------------------------------------------- indexing
@st.composite
def basic_index(draw, shape):
    parts = []
    for s in shape[: draw(st.integers(0, len(shape)))]:
        kind = draw(st.sampled_from(["slice", "int", "none", "all"]))
        if kind == "int" and s > 0:
            parts.append(draw(st.integers(-s, s - 1)))
        elif kind == "none":
            parts += [None, slice(None)]  # None takes no dim: this dim still needs its own entry
        elif kind == "all":
            parts.append(slice(None))
        else:
            start = draw(st.one_of(st.none(), st.integers(-s - 1, s + 1)))
            stop = draw(st.one_of(st.none(), st.integers(-s - 1, s + 1)))
            step = draw(st.sampled_from([None, 1, 2, -1, -2]))
            parts.append(slice(start, stop, step))
    if draw(st.booleans()):
        parts.append(Ellipsis)
    return tuple(parts)


@settings(max_examples=examples(120), deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4), seed=SEEDS, data=st.data(),
       noncontig=st.booleans())
def test_getitem_basic(shape, seed, data, noncontig):
    idx = data.draw(basic_index(shape))
    x = rand(np.random.default_rng(seed), shape)
    check_op(lambda t: t[idx], lambda a: a[idx], [x], noncontig=noncontig)


@settings(max_examples=examples(120), deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), seed=SEEDS, data=st.data(),
       as_tensor=st.booleans(), noncontig=st.booleans())
def test_getitem_integer_array_repeated(shape, seed, data, as_tensor, noncontig):
    rng = np.random.default_rng(seed)
    n = shape[0]
    m = data.draw(st.integers(1, 6))
    idx = rng.integers(-n, n, size=m)
    idx = np.concatenate([idx, idx[:1], idx[:1]])  # a repeated index, always: backward must scatter-add
    x = rand(rng, shape)
    key = mt.tensor(idx) if as_tensor else idx
    check_op(lambda t: t[key], lambda a: a[idx], [x], noncontig=noncontig)
    if len(shape) >= 2:
        j = rng.integers(0, shape[1], size=idx.shape)
        check_op(lambda t: t[key, mt.tensor(j)], lambda a: a[idx, j], [x], noncontig=noncontig)  # pairs
        check_op(lambda t: t[:, list(j)], lambda a: a[:, j], [x])  # a slice, then an integer list


def test_getitem_repeated_indices_accumulate():
    x = mt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[mt.tensor([0, 2, 0, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0])


@settings(max_examples=examples(90), deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4), seed=SEEDS, full=st.booleans(),
       noncontig=st.booleans())
def test_getitem_bool_mask(shape, seed, full, noncontig):
    rng = np.random.default_rng(seed)
    x = rand(rng, shape)
    mask = rng.random(shape if full else shape[:1]) > 0.4
    check_op(lambda t, m: t[m], lambda a, m: a[m], [x, mask], noncontig=noncontig)


# ----------------------------------------------------------------------------- cat / stack
@settings(max_examples=examples(90), deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3), seed=SEEDS, data=st.data(),
       noncontig=st.booleans())
def test_cat(shape, seed, data, noncontig):
    rng = np.random.default_rng(seed)
    nd = len(shape)
    dim = data.draw(st.integers(-nd, nd - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    xs = []
    for s in sizes:
        sh = list(shape)
        sh[dim] = s
        xs.append(rand(rng, tuple(sh)))
    check_op(lambda *ts: mt.cat(list(ts), dim=dim), lambda *a: np.concatenate(a, axis=dim), xs, noncontig=noncontig)


@settings(max_examples=examples(90), deadline=None)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3), seed=SEEDS, data=st.data(),
       noncontig=st.booleans())
def test_stack(shape, seed, data, noncontig):
    rng = np.random.default_rng(seed)
    dim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    k = data.draw(st.integers(1, 3))
    xs = [rand(rng, shape) for _ in range(k)]
    check_op(lambda *ts: mt.stack(ts, dim), lambda *a: np.stack(a, axis=dim), xs, noncontig=noncontig)


def test_cat_of_one_input_needing_grad():
    rng = np.random.default_rng(3)
    xs = [rand(rng, (2, 3)), rand(rng, (1, 3)), rand(rng, (2, 3))]
    check_op(lambda *ts: mt.cat(ts, 0), lambda *a: np.concatenate(a, 0), xs, grad_inputs=[1])


# ----------------------------------------------------------------------------- composites
@settings(max_examples=examples(48), deadline=None)
@given(shapes=PAIRS, seed=SEEDS)
def test_composite_expression(shapes, seed):
    """A small graph mixing ops, broadcasting and reuse of intermediates."""
    sa, sb = shapes.input_shapes
    rng = np.random.default_rng(seed)

    def f(a, b):
        h = (a * b).tanh()
        return (h * h + (a - b).sigmoid() * h).sum(-1, keepdim=True) if h.ndim else h * h

    def ref(a, b):
        h = np.tanh(a * b)
        s = 1 / (1 + np.exp(-(a - b)))
        return (h * h + s * h).sum(-1, keepdims=True) if h.ndim else h * h

    check_op(f, ref, [rand(rng, sa), rand(rng, sb)], noncontig=True)


def test_numpy_scalars_act_as_python_numbers():
    """A NumPy scalar operand (np.float64) must not promote a float32 tensor, as a Python float does not."""
    x = mt.tensor([0.5, 2.0], requires_grad=True)
    c = np.float64(1.5)
    outs = [x * c, c * x, x + c, x - c, c - x, x / c, c / x, x**c, c**x, x.pow(c), mt.maximum(x, c),
            x.clamp(c), x.clamp(max=c), mt.where(x > 1, x, c)]
    for k, y in enumerate(outs):
        assert y.dtype is mt.float32, f"expression {k} gave {y.dtype}"
    sum(o.sum() for o in outs).backward()
    assert x.grad.dtype is mt.float32


# ----------------------------------------------------------------------------- packed self-attention
@pytest.mark.parametrize("causal,mask", [(False, None), (True, None), (True, "float"), (False, "bool")])
def test_packed_self_attention_gradcheck(causal, mask):
    """Self-attention through the packed Q/K/V op: float64 central differences for the input
    and both projections, with and without the causal flag and a mask."""
    rng = np.random.default_rng(7)
    B, T, E, H = 2, 5, 6, 2
    mha = mt.nn.MultiheadAttention(E, H, batch_first=True, dtype=mt.float64)
    with mt.no_grad():
        mha.in_proj_bias.copy_(mt.tensor(rng.normal(size=3 * E)))
    m = None
    if mask == "float":
        m = mt.tensor(np.triu(np.full((T, T), -np.inf), 1) + rng.normal(size=(T, T)))
    elif mask == "bool":
        m = mt.tensor(rng.random((T, T)) < 0.3)
    x = mt.tensor(rng.normal(size=(B, T, E)), requires_grad=True)

    def attend(x, w, b):
        mha.in_proj_weight, mha.in_proj_bias = w, b
        return mha(x, x, x, attn_mask=m, need_weights=False, is_causal=causal)[0]

    w = mt.tensor(mha.in_proj_weight.detach().numpy(), requires_grad=True)
    b = mt.tensor(mha.in_proj_bias.detach().numpy(), requires_grad=True)
    assert gradcheck(attend, (x, w, b))


def test_packed_self_attention_matches_torch():
    """Output and gradients of MultiheadAttention's packed path against torch's module."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    B, T, E, H = 3, 7, 8, 2
    mha = mt.nn.MultiheadAttention(E, H, batch_first=False)
    ref = torch.nn.MultiheadAttention(E, H, batch_first=False)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.from_numpy(mha.in_proj_weight.detach().numpy()))
        ref.in_proj_bias.copy_(torch.from_numpy(rng.normal(size=3 * E).astype(np.float32)))
        ref.out_proj.weight.copy_(torch.from_numpy(mha.out_proj.weight.detach().numpy()))
    with mt.no_grad():
        mha.in_proj_bias.copy_(mt.tensor(ref.in_proj_bias.detach().numpy()))
    xn = rng.normal(size=(T, B, E)).astype(np.float32)
    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    x, xt = mt.tensor(xn, requires_grad=True), torch.tensor(xn, requires_grad=True)
    out = mha(x, x, x, attn_mask=mt.tensor(mask), need_weights=False, is_causal=True)[0]
    out_t = ref(xt, xt, xt, attn_mask=torch.from_numpy(mask), need_weights=False, is_causal=True)[0]
    gn = rng.normal(size=out_t.shape).astype(np.float32)
    out.backward(mt.tensor(gn))
    out_t.backward(torch.from_numpy(gn))
    np.testing.assert_allclose(out.detach().numpy(), out_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mha.in_proj_weight.grad.numpy(), ref.in_proj_weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mha.in_proj_bias.grad.numpy(), ref.in_proj_bias.grad.numpy(), rtol=1e-4, atol=1e-5)
