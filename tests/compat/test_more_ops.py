"""The ops PyTorch programs use beyond the core set: each against a NumPy reference (float64
and float32, non-contiguous inputs, length 1), a float64 gradcheck, and PyTorch when installed."""
import warnings

import numpy as np
import pytest

import minitrans as mt

from helpers import check_op, distinct, grid, positive, rand

RNG = np.random.default_rng


def _np_tri(x, k, upper):
    return np.triu(x, k) if upper else np.tril(x, k)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 4, 3)])
@pytest.mark.parametrize("k", [-1, 0, 2])
@pytest.mark.parametrize("upper", [False, True])
def test_tril_triu(shape, k, upper):
    fn = mt.triu if upper else mt.tril
    check_op(lambda x: fn(x, k), lambda x: _np_tri(x, k, upper), [rand(RNG(0), shape)], noncontig=True)
    check_op(lambda x: (x.triu if upper else x.tril)(diagonal=k), lambda x: _np_tri(x, k, upper),
             [rand(RNG(1), shape)])


@pytest.mark.parametrize("name,ref,draw", [
    ("sin", np.sin, rand), ("cos", np.cos, rand),
    ("floor", np.floor, grid), ("ceil", np.ceil, grid), ("trunc", np.trunc, grid), ("round", np.round, grid),
    ("sign", np.sign, grid), ("neg", np.negative, rand), ("clone", np.copy, rand),
])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4)])
def test_unary(name, ref, draw, shape):
    check_op(getattr(mt, name), ref, [draw(RNG(2), shape)], noncontig=True)
    check_op(lambda x: getattr(x, name)(), ref, [draw(RNG(3), shape)])


def test_round_decimals_and_half_to_even():
    x = mt.tensor([0.5, 1.5, 2.5, -0.5, 1.2345], dtype=mt.float64)
    assert x.round().tolist() == [0.0, 2.0, 2.0, -0.0, 1.0]
    np.testing.assert_allclose(mt.round(x, decimals=2).numpy(), np.round(x.numpy(), 2))


@pytest.mark.parametrize("mode", ["trunc", "floor"])
def test_div_rounding_modes(mode):
    a = np.array([7, -7, 6, -1, 0])
    b = np.array([2, 2, -4, 3, 5])
    want = np.trunc(a / b) if mode == "trunc" else np.floor(a / b)
    out = mt.div(mt.tensor(a), mt.tensor(b), rounding_mode=mode)
    assert out.dtype is mt.int64 and out.tolist() == want.astype(np.int64).tolist()
    fa = rand(RNG(4), (3, 4))
    check_op(lambda x: x.div(0.3, rounding_mode=mode), lambda x: (np.trunc if mode == "trunc" else np.floor)(x / 0.3),
             [fa], noncontig=True, gc_atol=1e-5)


def test_floor_division_operator_and_remainder():
    a, b = np.array([7, -7, 5, -5]), np.array([2, 2, -3, -3])
    np.testing.assert_array_equal((mt.tensor(a) // mt.tensor(b)).numpy(), a // b)
    np.testing.assert_array_equal((mt.tensor(a) // 2).numpy(), a // 2)
    np.testing.assert_array_equal((9 // mt.tensor(b)).numpy(), 9 // b)
    np.testing.assert_array_equal((mt.tensor(a) % mt.tensor(b)).numpy(), a % b)
    np.testing.assert_array_equal((mt.tensor(a) % 3).numpy(), a % 3)
    assert (mt.tensor([7, 8]) // 2.0).dtype is mt.float32                 # int // float -> float
    check_op(lambda x, y: x % y, lambda x, y: np.mod(x, y), [grid(RNG(5), (3, 4)), positive(RNG(6), (4,))],
             noncontig=True)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        mt.tensor([1, 2]) // 0
    with pytest.raises(ValueError, match="rounding_mode"):
        mt.tensor([1.0]).div(2, rounding_mode="round")


@pytest.mark.parametrize("dim,start,length", [(0, 0, 1), (1, 2, 3), (-1, -3, 2), (0, 3, 0)])
def test_narrow(dim, start, length):
    def ref(x):
        n = x.shape[dim]
        s = start + n if start < 0 else start
        return np.take(x, np.arange(s, s + length), axis=dim)

    check_op(lambda x: x.narrow(dim, start, length), ref, [rand(RNG(7), (3, 5))], noncontig=True)
    check_op(lambda x: mt.narrow(x, dim, mt.tensor(start), length), ref, [rand(RNG(8), (3, 5))])


def test_narrow_errors():
    x = mt.zeros(3, 5)
    with pytest.raises(RuntimeError, match=r"start \(3\) \+ length \(3\) exceeds dimension size \(5\)"):
        x.narrow(1, 3, 3)
    with pytest.raises(IndexError, match="dim 2 is out of range"):
        x.narrow(2, 0, 1)


@pytest.mark.parametrize("shape,dim", [((6,), 0), ((3, 5), -1), ((4, 3), 0), ((2, 3, 4), 1)])
@pytest.mark.parametrize("largest", [True, False])
def test_topk_and_sort(shape, dim, largest):
    k = min(2, shape[dim])

    def ref_topk(x):
        order = np.argsort(-x if largest else x, axis=dim, kind="stable")
        idx = np.take(order, np.arange(k), axis=dim)
        return np.take_along_axis(x, idx, axis=dim), idx

    check_op(lambda x: tuple(x.topk(k, dim=dim, largest=largest)), ref_topk, [distinct(RNG(9), shape)],
             noncontig=True)

    def ref_sort(x):
        idx = np.argsort(-x if largest else x, axis=dim, kind="stable")
        return np.take_along_axis(x, idx, axis=dim), idx

    check_op(lambda x: tuple(mt.sort(x, dim=dim, descending=largest)), ref_sort, [distinct(RNG(10), shape)])
    out = mt.topk(mt.tensor(distinct(RNG(11), shape)), k, dim=dim, largest=largest)
    assert out.values.shape == out.indices.shape and out.indices.dtype is mt.int64


def test_topk_errors():
    with pytest.raises(RuntimeError, match=r"k \(4\) is out of range"):
        mt.zeros(3).topk(4)


def test_gather():
    idx = np.array([[2, 0], [1, 1], [0, 2]])
    check_op(lambda x: x.gather(1, mt.tensor(idx)), lambda x: np.take_along_axis(x, idx, axis=1),
             [rand(RNG(12), (3, 4))], noncontig=True)
    with pytest.raises(RuntimeError, match="int64"):
        mt.zeros(3, 4).gather(1, mt.tensor(idx).float())


@pytest.mark.parametrize("method", ["softmax", "log_softmax"])
def test_softmax_methods(method):
    def ref(x):
        z = x - x.max(axis=0, keepdims=True)
        ls = z - np.log(np.exp(z).sum(axis=0, keepdims=True))
        return np.exp(ls) if method == "softmax" else ls

    check_op(lambda x: getattr(x, method)(0), ref, [rand(RNG(13), (4, 3))], noncontig=True)
    check_op(lambda x: getattr(mt, method)(x, dim=0), ref, [rand(RNG(14), (1, 2))])


def test_log_of_zero_is_silent_minus_inf():
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # a NumPy RuntimeWarning would fail here
        out = mt.log(mt.tensor([0.0, 1.0, -1.0]))
    assert out.numpy()[0] == -np.inf and out.numpy()[1] == 0 and np.isnan(out.numpy()[2])


def test_int_tensors_use_float_math():
    assert mt.sin(mt.tensor([0, 1])).dtype is mt.float32
    assert mt.tensor([1, -2]).floor().dtype is mt.int64


# -------------------------------------------------------------------------- multinomial
def test_multinomial_is_reproducible_and_follows_the_weights():
    w = mt.tensor([[1.0, 0.0, 3.0, 4.0], [0.0, 0.0, 1.0, 0.0]])
    mt.manual_seed(5)
    a = mt.multinomial(w, 4000, replacement=True)
    mt.manual_seed(5)
    b = w.multinomial(4000, replacement=True)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.shape == (2, 4000) and a.dtype is mt.int64
    freq = np.bincount(a.numpy()[0], minlength=4) / 4000
    np.testing.assert_allclose(freq, [0.125, 0.0, 0.375, 0.5], atol=0.03)
    assert (a.numpy()[1] == 2).all()


def test_multinomial_without_replacement():
    mt.manual_seed(0)
    w = mt.tensor([0.5, 0.0, 2.0, 1.0, 0.1])
    draws = np.stack([mt.multinomial(w, 4).numpy() for _ in range(300)])
    assert all(len(set(r)) == 4 and 1 not in r for r in draws)            # distinct, zero weight never drawn
    first = np.bincount(draws[:, 0], minlength=5) / 300                     # the first draw follows the weights
    np.testing.assert_allclose(first, np.array([0.5, 0, 2, 1, 0.1]) / 3.6, atol=0.08)


@pytest.mark.parametrize("w,n,repl,match", [
    ([1.0, -1.0], 1, True, "element < 0"),
    ([0.0, 0.0], 1, True, "sum of probabilities"),
    ([1.0, 1.0], 3, False, "without replacement"),
    ([[[1.0]]], 1, True, "1 or 2 dim"),
])
def test_multinomial_errors(w, n, repl, match):
    with pytest.raises(RuntimeError, match=match):
        mt.multinomial(mt.tensor(w), n, replacement=repl)


# -------------------------------------------------------------------------- against PyTorch
UNARY = ["sin", "cos", "tanh", "sigmoid", "abs", "exp", "sqrt", "rsqrt", "neg", "sign", "floor", "ceil",
         "round", "trunc", "relu", "square", "clone"]


@pytest.mark.parametrize("name", UNARY)
def test_unary_against_pytorch(name):
    torch = pytest.importorskip("torch")
    x = positive(RNG(15), (3, 4)) if name in ("sqrt", "rsqrt") else grid(RNG(15), (3, 4))
    w = rand(RNG(16), (3, 4))
    got, want = [], []
    for lib, out in ((mt, got), (torch, want)):
        t = lib.tensor(x, requires_grad=True)
        y = getattr(lib, name)(t)
        (y * lib.tensor(w)).sum().backward()
        out += [y.detach().numpy(), t.grad.numpy()]
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["tril", "triu", "narrow", "topk", "sort", "gather", "clamp", "log", "softmax",
                                  "log_softmax", "div_floor", "div_trunc", "floordiv", "remainder"])
def test_ops_against_pytorch(case):
    torch = pytest.importorskip("torch")
    x = distinct(RNG(17), (4, 5)) + 0.01
    idx = np.array([[0, 4], [3, 3], [1, 0], [2, 2]])
    fns = {
        "tril": lambda L, t: L.tril(t, -1), "triu": lambda L, t: L.triu(t, 1),
        "narrow": lambda L, t: t.narrow(1, 1, 3), "topk": lambda L, t: L.topk(t, 3, dim=1)[0],
        "sort": lambda L, t: L.sort(t, dim=0, descending=True)[0], "gather": lambda L, t: L.gather(t, 1, L.tensor(idx)),
        "clamp": lambda L, t: L.clamp(t, min=-0.3, max=0.4), "log": lambda L, t: L.log(t.abs()),
        "softmax": lambda L, t: t.softmax(-1), "log_softmax": lambda L, t: t.log_softmax(0),
        "div_floor": lambda L, t: L.div(t, 0.3, rounding_mode="floor"),
        "div_trunc": lambda L, t: t.div(0.3, rounding_mode="trunc"),
        "floordiv": lambda L, t: t // 0.3, "remainder": lambda L, t: t % 0.3,
    }
    differentiable = case not in ("floordiv",)  # PyTorch defines no derivative for floor_divide
    got, want = [], []
    for lib, out in ((mt, got), (torch, want)):
        t = lib.tensor(x, requires_grad=differentiable)
        y = fns[case](lib, t)
        out.append(y.detach().numpy())
        if differentiable:
            (y * lib.tensor(rand(RNG(18), tuple(y.shape)))).sum().backward()
            out.append(t.grad.numpy())
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_index_ops_against_pytorch():
    torch = pytest.importorskip("torch")
    x = distinct(RNG(19), (3, 6))
    for lib in (mt, torch):
        v, i = lib.tensor(x).topk(2, dim=1)
        assert i.tolist() == np.argsort(-x, axis=1)[:, :2].tolist()
    assert (torch.tensor([7, -7]) // 2).tolist() == (mt.tensor([7, -7]) // 2).tolist()
    assert torch.div(torch.tensor([7, -7]), 2, rounding_mode="trunc").tolist() == \
        mt.div(mt.tensor([7, -7]), 2, rounding_mode="trunc").tolist()


def test_ops_without_a_cuda_kernel_say_so():
    if not mt.cuda.is_available():
        pytest.skip("no CUDA device or simulator")
    x = mt.tensor([[0.5, -1.5], [2.0, 0.25]], device="cuda")
    for fn, name in ((mt.sin, "sin"), (mt.cos, "cos"), (mt.floor, "floor"), (lambda t: t.topk(1), "topk"),
                     (lambda t: t // 2.0, "div")):
        with pytest.raises(NotImplementedError, match=f"{name}.*cuda"):
            fn(x)
    np.testing.assert_array_equal(x.tril().cpu().numpy(), np.tril(x.cpu().numpy()))   # tril runs on cuda
    assert x.sign().cpu().tolist() == [[1.0, -1.0], [1.0, 1.0]]


# -------------------------------------------------------------------------- shape helpers and small extras
@pytest.mark.parametrize("shape,dim", [((1,), 0), ((5,), 0), ((3, 4), 1), ((2, 3, 2), 0)])
def test_cumsum_and_flip(shape, dim):
    check_op(lambda x: x.cumsum(dim), lambda x: np.cumsum(x, axis=dim), [rand(RNG(20), shape)], noncontig=True)
    check_op(lambda x: mt.flip(x, [dim]), lambda x: np.flip(x, dim), [rand(RNG(21), shape)], noncontig=True)


@pytest.mark.parametrize("shape,reps", [((3,), (2,)), ((2, 3), (1, 2)), ((2, 1), (3, 2, 2)), ((1,), (1,))])
def test_repeat(shape, reps):
    check_op(lambda x: x.repeat(*reps), lambda x: np.tile(x, reps), [rand(RNG(22), shape)], noncontig=True)


def test_repeat_interleave_norm_outer_bmm_silu():
    check_op(lambda x: x.repeat_interleave(2, dim=1), lambda x: np.repeat(x, 2, axis=1), [rand(RNG(23), (2, 3))])
    check_op(lambda x: x.norm(dim=1), lambda x: np.linalg.norm(x, axis=1), [rand(RNG(24), (3, 4))], noncontig=True)
    check_op(lambda x: mt.norm(x, p=1), lambda x: np.abs(x).sum(), [grid(RNG(25), (3, 4))])
    check_op(mt.outer, np.outer, [rand(RNG(26), (3,)), rand(RNG(27), (4,))])
    check_op(mt.bmm, np.matmul, [rand(RNG(28), (2, 3, 4)), rand(RNG(29), (2, 4, 5))], noncontig=True)
    from minitrans.nn import functional as F

    check_op(F.silu, lambda x: x / (1 + np.exp(-x)), [rand(RNG(30), (3, 4))], noncontig=True)
    check_op(lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), lambda x: np.pad(x, ((0, 1), (1, 2)), constant_values=0.5),
             [rand(RNG(31), (2, 3))], noncontig=True)
    assert F.one_hot(mt.tensor([2, 0]), 4).tolist() == [[0, 0, 1, 0], [1, 0, 0, 0]]
    with pytest.raises(RuntimeError, match="bmm"):
        mt.bmm(mt.zeros(2, 3), mt.zeros(3, 2))


def test_masked_fill_in_place():
    x = mt.zeros(2, 3)
    x.masked_fill_(mt.tensor([True, False, True]), 7.0)            # the mask broadcasts over rows
    assert x.tolist() == [[7, 0, 7], [7, 0, 7]] and x._version == 1
    w = mt.randn(2, 3, requires_grad=True)
    y = w * 1.0
    y.masked_fill_(mt.tensor([[True, False, False], [False, False, True]]), 0.0)
    y.sum().backward()
    assert w.grad.tolist() == [[0, 1, 1], [1, 1, 0]]


def test_extras_against_pytorch():
    torch = pytest.importorskip("torch")
    x = rand(RNG(32), (3, 4))
    cases = [lambda L, t: t.cumsum(1), lambda L, t: t.flip([0, 1]), lambda L, t: t.repeat(2, 1, 3),
             lambda L, t: t.repeat_interleave(3, dim=0), lambda L, t: t.norm(dim=0, keepdim=True),
             lambda L, t: L.nn.functional.pad(t, (2, 1)), lambda L, t: L.nn.functional.silu(t),
             lambda L, t: L.nn.Softmax(dim=1)(t), lambda L, t: L.nn.LogSoftmax(dim=0)(t),
             lambda L, t: L.nn.Sigmoid()(t), lambda L, t: L.outer(t[0], t[1])]
    for i, f in enumerate(cases):
        got = []
        for L in (mt, torch):
            t = L.tensor(x, requires_grad=True)
            y = f(L, t)
            (y * L.tensor(rand(RNG(33), tuple(y.shape)))).sum().backward()
            got.append((y.detach().numpy(), t.grad.numpy()))
        for a, b in zip(*got):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"case {i}")
    assert mt.nn.functional.one_hot(mt.tensor([3, 1])).tolist() == \
        torch.nn.functional.one_hot(torch.tensor([3, 1])).tolist()


def test_module_dict_registers_its_modules():
    d = mt.nn.ModuleDict({"a": mt.nn.Linear(2, 3), "b": mt.nn.LSTM(3, 4)})
    d["c"] = mt.nn.Linear(4, 1)
    assert list(d) == ["a", "b", "c"] and "b" in d and len(d) == 3
    names = [n for n, _ in d.named_parameters()]
    assert names[:2] == ["a.weight", "a.bias"] and "b.weight_hh_l0" in names and names[-1] == "c.bias"
    with pytest.raises(TypeError, match="must be a Module"):
        d["x"] = 3
