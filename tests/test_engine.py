"""The backward engine: graph walk, accumulation, retain_graph, hooks, grad modes,
the Function extension API, gradcheck itself, saved-array freeing, version counters
and anomaly detection."""
import sys
import time

import numpy as np
import pytest

import minitrans as mt
from minitrans.autograd import Function, GradcheckError, gradcheck


def leaf(values, dtype=mt.float64):
    return mt.tensor(np.asarray(values, dtype=np.float64), dtype=dtype, requires_grad=True)


# ----------------------------------------------------------------------------- graph walk
def test_long_chain_backward_is_iterative_and_fast():
    n = 100_000
    x = leaf(0.5)
    y = x
    start = time.perf_counter()
    for i in range(n):
        y = y * 1.00001 if i % 2 else y + 0.25
    y.backward()
    elapsed = time.perf_counter() - start
    assert sys.getrecursionlimit() < n  # a recursive walk would have overflowed the stack
    np.testing.assert_allclose(x.grad.item(), 1.00001 ** (n // 2), rtol=1e-9)
    assert elapsed < 20.0, f"100k-op chain took {elapsed:.1f} s"


def test_gradient_accumulates_across_backward_calls():
    x = leaf([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * x.numpy())
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * x.numpy() + 3)


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)  # the failed call changed nothing


def test_second_backward_without_retain_graph_raises():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    g = x.grad.numpy().copy()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), g)


def test_backward_with_gradient_for_non_scalar_outputs():
    rng = np.random.default_rng(0)
    xv, wv, gv = rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    x, w = leaf(xv), leaf(wv)
    (x * w).backward(mt.tensor(gv, dtype=mt.float64))
    np.testing.assert_allclose(x.grad.numpy(), gv * wv)
    np.testing.assert_allclose(w.grad.numpy(), gv * xv)


def test_backward_on_a_leaf_with_gradient():
    x = leaf([1.0, 2.0])
    x.backward(mt.tensor([3.0, 4.0], dtype=mt.float64))
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_non_scalar_backward_without_gradient_raises():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()
    assert x.grad is None


def test_backward_gradient_of_wrong_shape_raises():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"\(3,\)"):
        (x * 2).backward(mt.tensor([1.0, 1.0, 1.0]))
    assert x.grad is None


def test_backward_on_a_tensor_that_does_not_require_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mt.tensor([1.0]).sum().backward()


def test_diamond_graph_sums_both_paths():
    xv = np.array([0.3, -0.7, 1.1])
    x = leaf(xv)
    h = x.exp()  # used twice below
    (h * 2.0 + h * h).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), (2.0 + 2 * np.exp(xv)) * np.exp(xv))
    x2 = leaf(xv)
    assert gradcheck(lambda t: (lambda h: h * h.tanh() + h)(t.sigmoid()), [x2])


def test_same_tensor_used_twice_in_one_op():
    x = leaf([1.5, -2.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, -4.0])


def test_broadcast_gradient_reduced_to_input_shape():
    a, b = leaf(np.arange(3.0).reshape(3, 1)), leaf(np.arange(4.0).reshape(1, 4))
    (a + b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (1, 4)
    np.testing.assert_array_equal(a.grad.numpy(), np.full((3, 1), 4.0))
    np.testing.assert_array_equal(b.grad.numpy(), np.full((1, 4), 3.0))
    a.grad = b.grad = None
    (a * b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.full((3, 1), 6.0))
    np.testing.assert_allclose(b.grad.numpy(), np.full((1, 4), 3.0))
    s = leaf(2.0)
    (a * s).sum().backward()
    assert s.grad.shape == () and s.grad.item() == pytest.approx(3.0)


def test_leaf_grads_are_separate_arrays():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).sum().backward()  # Add hands the same gradient to both inputs
    with mt.no_grad():
        a.grad.mul_(10.0)
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_grad_dtype_follows_the_leaf():
    x32, x64 = leaf([1.0, 2.0], mt.float32), leaf([0.5, 0.25])
    (x32.double() * x64).sum().backward()
    assert x32.grad.dtype is mt.float32 and x64.grad.dtype is mt.float64
    np.testing.assert_allclose(x32.grad.numpy(), [0.5, 0.25])


# ----------------------------------------------------------------------------- grad modes
def test_no_grad_and_enable_grad():
    x = leaf([1.0, 2.0])
    with mt.no_grad():
        assert not mt.is_grad_enabled()
        y = x * 2
        with mt.enable_grad():
            assert mt.is_grad_enabled()
            z = x * 2
        w = x * 3
    assert mt.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert not w.requires_grad
    assert z.requires_grad and z.grad_fn is not None


def test_no_grad_and_enable_grad_as_decorators():
    x = leaf([1.0])

    @mt.no_grad()
    def f(t):
        return t * 2

    @mt.enable_grad()
    def g(t):
        return t * 2

    assert not f(x).requires_grad
    with mt.no_grad():
        assert g(x).requires_grad
        assert not mt.is_grad_enabled()
    assert mt.is_grad_enabled()


def test_grad_mode_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with mt.no_grad():
            1 / 0
    assert mt.is_grad_enabled()


def test_set_grad_enabled():
    x = leaf([1.0])
    with mt.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert mt.is_grad_enabled()
    mt.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        mt.set_grad_enabled(True)
    assert (x * 2).requires_grad


# ----------------------------------------------------------------------------- retain_grad and hooks
def test_retain_grad_on_a_non_leaf():
    xv = np.array([1.0, -3.0])
    x = leaf(xv)
    h = x * 2.0
    h.retain_grad()
    other = x * 3.0
    (h * h + other).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * (2 * xv))
    assert other.grad is None  # not retained
    np.testing.assert_allclose(x.grad.numpy(), 8 * xv + 3)


def test_hook_on_a_leaf_sees_and_replaces_the_gradient():
    x = leaf([1.0, 2.0])
    seen = []
    h1 = x.register_hook(lambda g: seen.append(g.numpy().copy()))
    h2 = x.register_hook(lambda g: g * 10.0)
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(seen[0], [3.0, 3.0])
    np.testing.assert_array_equal(x.grad.numpy(), [30.0, 30.0])
    h1.remove()
    h2.remove()
    x.grad = None
    (x * 3.0).sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_hook_on_a_non_leaf_replaces_the_gradient_upstream():
    xv = np.array([0.5, -1.5])
    x = leaf(xv)
    h = x * x
    seen = []
    handle = h.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 0.5)
    (h * 4.0).sum().backward()
    np.testing.assert_array_equal(seen[0], [4.0, 4.0])
    np.testing.assert_allclose(x.grad.numpy(), 0.5 * 4.0 * 2 * xv)
    handle.remove()
    x.grad = None
    h2 = x * x
    h2.register_hook(lambda g: None)  # returning None keeps the gradient
    (h2 * 4.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 4.0 * 2 * xv)


def test_hook_removed_from_non_leaf_has_no_effect():
    x = leaf([1.0])
    h = x * 2.0
    handle = h.register_hook(lambda g: g * 100.0)
    handle.remove()
    handle.remove()  # removing twice is harmless
    h.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0])


def test_hook_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError):
        mt.tensor([1.0]).register_hook(lambda g: g)


# ----------------------------------------------------------------------------- Function API
class Square(Function):
    """a²"""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_arrays
        return 2 * a * g if ctx.needs_input_grad[0] else None


class ScaledMul(Function):
    """a·b·scale; records which inputs needed a gradient (one entry per positional input, as in PyTorch)"""

    seen = []

    @staticmethod
    def forward(ctx, a, b, scale=1.0):
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return a * b * scale

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_arrays
        ScaledMul.seen.append(ctx.needs_input_grad)
        na, nb = ctx.needs_input_grad[:2]
        extra = (None,) * (len(ctx.needs_input_grad) - 2)  # scale, when given positionally
        return (g * b * ctx.scale if na else None), (g * a * ctx.scale if nb else None), *extra


class WrongSquare(Function):
    """a² with the gradient 3·a·g instead of 2·a·g"""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_arrays
        return 3 * a * g


class OneWrongElement(Function):
    """a² with a gradient that is wrong (scaled by 1.5) at flat element 4 only"""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_arrays
        out = 2 * a * g
        out.reshape(-1)[4] *= 1.5
        return out


class WrongSecondInput(Function):
    """a·b with a wrong gradient for b"""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_arrays
        return g * b, g * a * 1.01


def test_user_function_forward_backward_and_gradcheck():
    xv = np.array([[1.0, -2.0], [0.5, 3.0]])
    x = leaf(xv)
    y = Square.apply(x)
    assert isinstance(y, mt.Tensor) and isinstance(y.grad_fn, Square)
    np.testing.assert_allclose(y.numpy(), xv**2)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * xv)
    assert gradcheck(Square.apply, [leaf(xv)])
    assert gradcheck(Square.apply, [leaf(xv)], fast_mode=True)
    assert not Square.apply(mt.tensor(xv)).requires_grad


def test_user_function_needs_input_grad_and_extra_args():
    a, b = leaf([1.0, 2.0]), mt.tensor([3.0, 4.0], dtype=mt.float64)
    ScaledMul.seen.clear()
    y = ScaledMul.apply(a, b, 2.0)
    y.sum().backward()
    assert ScaledMul.seen == [(True, False, False)]  # a, b, scale
    np.testing.assert_allclose(a.grad.numpy(), [6.0, 8.0])
    assert b.grad is None
    assert gradcheck(lambda p, q: ScaledMul.apply(p, q, scale=0.5), [leaf([1.0, 2.0]), leaf([3.0, -1.0])])


def test_gradcheck_detects_a_wrong_backward():
    x = leaf([[1.0, -2.0, 0.5], [0.7, 3.0, -1.2]])
    with pytest.raises(GradcheckError) as info:
        gradcheck(WrongSquare.apply, [x])
    msg = str(info.value)
    assert "input 0" in msg and "element (0, 0)" in msg
    assert gradcheck(WrongSquare.apply, [x], raise_exception=False) is False
    assert isinstance(info.value, RuntimeError)


def test_gradcheck_names_the_single_wrong_element():
    x = leaf(np.arange(1.0, 7.0).reshape(2, 3))
    with pytest.raises(GradcheckError, match=r"input 0.*element \(1, 1\)"):
        gradcheck(OneWrongElement.apply, [x])
    assert gradcheck(OneWrongElement.apply, [x], raise_exception=False) is False


def test_gradcheck_names_the_wrong_input():
    a, b = leaf([1.0, 2.0]), leaf([3.0, -4.0])
    with pytest.raises(GradcheckError, match=r"input 1"):
        gradcheck(WrongSecondInput.apply, [a, b])


def test_gradcheck_fast_mode():
    x = leaf([[1.0, -2.0, 0.5], [0.7, 3.0, -1.2]])
    assert gradcheck(lambda t: (t * t).tanh().sum(0), [x], fast_mode=True)
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(WrongSquare.apply, [x], fast_mode=True)
    assert gradcheck(OneWrongElement.apply, [x], fast_mode=True, raise_exception=False) is False


def test_gradcheck_leaves_grads_alone_and_needs_float64():
    x = leaf([1.0, 2.0])
    x.grad = mt.tensor([7.0, 7.0], dtype=mt.float64)
    assert gradcheck(Square.apply, [x])
    np.testing.assert_array_equal(x.grad.numpy(), [7.0, 7.0])
    with pytest.raises(ValueError, match="float64"):
        gradcheck(Square.apply, [leaf([1.0], mt.float32)])


# ----------------------------------------------------------------------------- saved arrays, versions
def test_saved_arrays_are_freed_after_backward():
    x = leaf([1.0, 2.0])
    y = x.exp() * x
    node = y.grad_fn
    assert len(node.saved) == 2
    y.sum().backward()
    assert node.saved == ()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        node.saved_arrays


def test_saved_arrays_kept_with_retain_graph():
    x = leaf([1.0, 2.0])
    y = x * x
    y.sum().backward(retain_graph=True)
    assert len(y.grad_fn.saved) == 2


def test_in_place_change_of_a_saved_output_is_detected():
    x = leaf([1.0, 2.0])
    y = x.exp()  # Exp saves its output
    with mt.no_grad():
        y.mul_(2.0)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()
    assert x.grad is None


def test_in_place_change_of_a_saved_input_is_detected():
    w = leaf([1.0, 2.0])
    x = mt.tensor([3.0, 4.0], dtype=mt.float64)  # needs no grad, but Mul saves it
    y = w * x
    x.add_(1.0)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()
    assert w.grad is None


def test_in_place_change_of_an_unsaved_input_is_fine():
    w = leaf([1.0, 2.0])
    x = mt.tensor([3.0, 4.0], dtype=mt.float64)
    y = w + x  # Add saves nothing
    x.add_(1.0)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])


def test_in_place_on_leaf_requiring_grad_needs_no_grad():
    w = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="in place"):
        w.add_(1.0)
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    with mt.no_grad():
        w.add_(1.0)
    np.testing.assert_array_equal(w.numpy(), [2.0, 3.0])


# ----------------------------------------------------------------------------- anomaly detection
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_detect_anomaly_in_forward_names_the_op():
    x = leaf([-1.0, 2.0])
    with mt.autograd.detect_anomaly():
        with pytest.raises(RuntimeError, match="Log"):
            x.log()
    y = x.log()  # outside the block: NaN, no error
    assert np.isnan(y.numpy()[0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_detect_anomaly_in_backward_names_the_op():
    x = leaf([0.0, 4.0])
    with mt.autograd.detect_anomaly():
        y = x.sqrt()  # finite forward; the gradient at 0 is inf
        with pytest.raises(RuntimeError, match="Sqrt"):
            y.sum().backward()
    assert x.grad is None
    x2 = leaf([0.0, 4.0])
    x2.sqrt().sum().backward()  # without anomaly mode: an inf gradient, no error
    assert np.isinf(x2.grad.numpy()[0])


def test_detect_anomaly_quiet_on_finite_values_and_restores_state():
    x = leaf([1.0, 2.0])
    with mt.autograd.detect_anomaly():
        (x.log() * x.sqrt()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 1 / np.array([1.0, 2.0]) * np.sqrt([1.0, 2.0])
                               + np.log([1.0, 2.0]) / (2 * np.sqrt([1.0, 2.0])))
    from minitrans.autograd.grad_mode import STATE

    assert STATE.anomaly is False


def test_node_hooks_and_retain_grad_last_across_retained_passes_and_stay_on_their_node():
    """A non-leaf's hook and retain_grad() are stored on its node only: they run on every retained
    backward pass, and another node of the same op gets neither."""
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    seen = []
    y.register_hook(lambda g: seen.append(g.tolist()))
    y.retain_grad()
    z = (y * y).sum()
    z.backward(retain_graph=True)
    z.backward()
    assert seen == [[6.0, 12.0], [6.0, 12.0]]       # dz/dy = 2y = 6x, each pass
    assert y.grad.tolist() == [12.0, 24.0]           # retained gradient summed over the two passes
    assert x.grad.tolist() == [36.0, 72.0]           # dz/dx = 18x, twice
    w = x * 3.0
    w.sum().backward()
    assert seen == [[6.0, 12.0], [6.0, 12.0]] and w.grad is None
