"""Bad input gives a clear error that names what is wrong, and changes nothing."""
import contextlib
import re

import numpy as np
import pytest

import minitrans as mt


@contextlib.contextmanager
def unchanged(*tensors):
    """Assert that the block leaves each tensor's data, .grad, version and graph node as they were."""
    before = [(t.numpy().copy(), None if t.grad is None else t.grad.numpy().copy(), t._version_counter[0], t._node)
              for t in tensors]
    yield
    for i, (t, (data, grad, version, node)) in enumerate(zip(tensors, before)):
        np.testing.assert_array_equal(t.numpy(), data, err_msg=f"tensor {i}: data changed")
        if grad is None:
            assert t.grad is None, f"tensor {i}: .grad appeared"
        else:
            np.testing.assert_array_equal(t.grad.numpy(), grad, err_msg=f"tensor {i}: .grad changed")
        assert t._version_counter[0] == version, f"tensor {i}: version counter changed"
        assert t._node is node


def leaves_with_grad(*shapes):
    """Leaves that already hold a .grad (from one good backward), so a change would show."""
    rng = np.random.default_rng(0)
    ts = [mt.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    total = None
    for t in ts:
        term = (t * t).sum()
        total = term if total is None else total + term
    total.backward()
    return ts


def _shape_pattern(*shapes):
    return ".*".join(re.escape(str(tuple(s))) for s in shapes)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((5,), (4, 2)),
                                   ((2, 2, 3), (3, 3, 4)), ((), (3,))])
def test_matmul_shape_mismatch_names_both_shapes(sa, sb):
    a, b = leaves_with_grad(sa, sb)
    with unchanged(a, b), pytest.raises(ValueError, match=_shape_pattern(sa, sb)):
        a @ b
    with unchanged(a, b), pytest.raises(ValueError, match=_shape_pattern(sa, sb)):
        mt.matmul(a, b)


@pytest.mark.parametrize("op", [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - b, lambda a, b: a / b,
                                mt.maximum, mt.minimum, lambda a, b: a**b, lambda a, b: a < b],
                         ids=["add", "mul", "sub", "div", "maximum", "minimum", "pow", "lt"])
@pytest.mark.parametrize("sa,sb", [((2, 3), (4,)), ((3, 1), (2, 4, 2)), ((0,), (2,))])
def test_broadcast_mismatch_names_both_shapes(op, sa, sb):
    a, b = leaves_with_grad(sa, sb)
    with unchanged(a, b), pytest.raises(ValueError, match=_shape_pattern(sa, sb)):
        op(a, b)


def test_where_and_masked_fill_shape_mismatch():
    (a,) = leaves_with_grad((2, 3))
    with unchanged(a), pytest.raises(ValueError, match=r"\(2, 3\)"):
        mt.where(mt.ones(4, dtype=mt.bool), a, 0.0)
    with unchanged(a), pytest.raises(ValueError, match=r"\(4,\).*\(2, 3\)"):
        a.masked_fill(mt.ones(4, dtype=mt.bool), 0.0)


def test_shape_op_errors():
    (a,) = leaves_with_grad((2, 3))
    with unchanged(a):
        with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
            a.reshape(4)
        with pytest.raises(ValueError, match="permute"):
            a.permute(0, 0)
        with pytest.raises(IndexError):
            a.transpose(0, 2)
        with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
            a.expand(2, 4)
        with pytest.raises(IndexError):
            a.sum(dim=2)
        with pytest.raises(ValueError, match="repeats"):
            a.sum(dim=(0, -2))
        with pytest.raises(IndexError, match=r"\(2, 3\)"):
            a[5]
        with pytest.raises(IndexError):
            a[mt.tensor([0.5])]
        with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
            mt.cat([a, mt.ones(2, 2)], dim=0)
        with pytest.raises(ValueError, match=r"\(3,\)"):
            mt.cat([a, mt.ones(3)])
        with pytest.raises(ValueError, match=r"\(2, 2\)"):
            mt.stack([a, mt.ones(2, 2)])
        with pytest.raises(ValueError):
            mt.cat([])
        with pytest.raises(RuntimeError, match="empty"):
            mt.zeros(0, 3).amax()


def test_in_place_shape_mismatch_changes_nothing():
    x = mt.ones(2, 3)
    with unchanged(x), pytest.raises(ValueError, match=r"\(2, 3\)"):
        x.add_(mt.ones(4))
    y = mt.ones(3)
    with unchanged(y), pytest.raises(ValueError, match=r"\(3,\)"):
        y.mul_(mt.ones(2, 3))


# ----------------------------------------------------------------------------- devices
def _on_fake_cuda(arr, requires_grad=False):
    # a tensor that merely claims to be on another device: apply must refuse before any kernel runs
    return mt.Tensor._wrap(np.asarray(arr, np.float32), mt.device("cuda"), requires_grad)


@pytest.mark.parametrize("op", [lambda a, b: a + b, lambda a, b: b * a, lambda a, b: a @ b, mt.maximum,
                                lambda a, b: mt.cat([a, b]), lambda a, b: mt.where(a > 0, a, b),
                                lambda a, b: a < b],
                         ids=["add", "rmul", "matmul", "maximum", "cat", "where", "lt"])
def test_mixed_devices_raise(op):
    a = mt.tensor([1.0, 2.0], requires_grad=True)
    (a * a).sum().backward()
    b = _on_fake_cuda([3.0, 4.0], requires_grad=True)
    with unchanged(a), pytest.raises(RuntimeError, match="cpu.*cuda|cuda.*cpu"):
        op(a, b)
    assert b.grad is None


def test_mixed_devices_in_a_user_function_raise():
    class Add(mt.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            raise AssertionError("forward must not run on mixed devices")

        @staticmethod
        def backward(ctx, g):
            return g, g

    a = mt.tensor([1.0], requires_grad=True)
    with unchanged(a), pytest.raises(RuntimeError, match="Add.*same device"):
        Add.apply(a, _on_fake_cuda([1.0]))


def test_masked_fill_mask_on_other_device():
    a = mt.tensor([1.0, 2.0], requires_grad=True)
    mask = mt.Tensor._wrap(np.array([True, False]), mt.device("cuda"))
    with unchanged(a), pytest.raises(RuntimeError, match="cuda"):
        a.masked_fill(mask, 0.0)


# ----------------------------------------------------------------------------- grad requirements
@pytest.mark.parametrize("make", [
    lambda: mt.tensor([1, 2], requires_grad=True),
    lambda: mt.tensor([True, False], requires_grad=True),
    lambda: mt.zeros(2, dtype=mt.int64, requires_grad=True),
    lambda: mt.ones(2, dtype=mt.bool, requires_grad=True),
    lambda: mt.arange(3, requires_grad=True),
    lambda: mt.full((2,), 3, requires_grad=True),
    lambda: mt.tensor(np.array([1, 2]), requires_grad=True),
], ids=["tensor-int", "tensor-bool", "zeros-int64", "ones-bool", "arange", "full-int", "numpy-int"])
def test_int_tensors_cannot_require_grad(make):
    with pytest.raises(RuntimeError, match="floating"):
        make()


def test_requires_grad_on_existing_int_tensor():
    t = mt.tensor([1, 2])
    with pytest.raises(RuntimeError, match="int64"):
        t.requires_grad_()
    assert not t.requires_grad


def test_non_scalar_backward_without_gradient():
    (a,) = leaves_with_grad((2, 3))
    y = a * 2.0
    with unchanged(a), pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        y.backward()


def test_second_backward_through_freed_graph():
    a, b = leaves_with_grad((3,), (3,))
    y = (a * b).exp().sum()
    y.backward()
    with unchanged(a, b), pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_gradient_on_other_device_or_shape():
    (a,) = leaves_with_grad((2,))
    y = a * 3.0
    with unchanged(a), pytest.raises(RuntimeError, match="cuda"):
        y.backward(_on_fake_cuda([1.0, 1.0]))
    with unchanged(a), pytest.raises(RuntimeError, match=r"\(3,\).*\(2,\)"):
        y.backward(mt.ones(3))


def test_in_place_on_graph_tensors_refused_and_changes_nothing():
    (a,) = leaves_with_grad((2,))
    h = a * 2.0
    with unchanged(a, h), pytest.raises(RuntimeError, match="in place|in-place"):
        h.add_(1.0)
    with unchanged(a), pytest.raises(RuntimeError, match="leaf"):
        a.mul_(2.0)


def test_bad_dtype_and_creation_arguments():
    with pytest.raises(TypeError, match="dtype"):
        mt.zeros(2, dtype="complex64")
    with pytest.raises(ValueError, match="non-negative"):
        mt.zeros(-1)
    with pytest.raises(TypeError):
        mt.tensor(["a", "b"])
    with pytest.raises(ValueError):
        mt.tensor([[1.0], [2.0, 3.0]])
    with pytest.raises(TypeError, match="mean"):
        mt.tensor([1, 2]).mean()
    with pytest.raises(TypeError):
        mt.ones(2) + "a"
    with pytest.raises(RuntimeError, match="2 elements"):
        mt.ones(2).item()
