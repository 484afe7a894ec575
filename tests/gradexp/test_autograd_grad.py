"""mt.autograd.grad / backward: values against NumPy and PyTorch, no side effects, a clear refusal of create_graph."""
from __future__ import annotations

import numpy as np
import pytest

import minitrans as mt


def test_grad_matches_numpy_and_leaves_dot_grad_alone():
    rng = np.random.default_rng(0)
    x_np, w_np = rng.standard_normal(4), rng.standard_normal(4)
    x = mt.tensor(x_np, requires_grad=True)
    w = mt.tensor(w_np, requires_grad=True)
    w.grad = mt.tensor(np.full(4, 7.0))          # an earlier gradient must survive
    h = x * w
    y = (h * h).sum()
    gx, gh = mt.autograd.grad(y, [x, h])
    np.testing.assert_allclose(gx.numpy(), 2 * x_np * w_np ** 2, rtol=1e-12)
    np.testing.assert_allclose(gh.numpy(), 2 * x_np * w_np, rtol=1e-12)
    assert x.grad is None and h.grad is None
    np.testing.assert_array_equal(w.grad.numpy(), np.full(4, 7.0))
    with pytest.raises(RuntimeError, match="freed|second time"):
        mt.autograd.grad(y, [x])                 # retain_graph defaults to False, as PyTorch


def test_grad_outputs_allow_unused_and_errors():
    x = mt.tensor([1.0, 2.0, 3.0], dtype=mt.float64, requires_grad=True)
    z = mt.tensor([1.0], dtype=mt.float64, requires_grad=True)
    y = x * 3
    (g,) = mt.autograd.grad(y, x, grad_outputs=mt.tensor([1.0, 0.5, -1.0], dtype=mt.float64), retain_graph=True)
    np.testing.assert_allclose(g.numpy(), [3.0, 1.5, -3.0])
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*not to have been used"):
        mt.autograd.grad(y.sum(), [x, z], retain_graph=True)
    assert mt.autograd.grad(y.sum(), [x, z], allow_unused=True, retain_graph=True)[1] is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        mt.autograd.grad(y.sum(), [mt.tensor([1.0])])
    with pytest.raises(TypeError, match=r"inputs\[0\] must be a Tensor"):
        mt.autograd.grad(y.sum(), [np.ones(3)])


@pytest.mark.parametrize("call", [
    lambda y, x: mt.autograd.grad(y, x, create_graph=True),
    lambda y, x: mt.autograd.backward(y, create_graph=True),
])
def test_create_graph_is_refused_clearly(call):
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    with pytest.raises(NotImplementedError, match="create_graph=True.*double backward.*not supported"):
        call(y, x)
    assert x.grad is None


def test_grad_matches_pytorch_through_a_layer():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x_np, w_np = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    out = []
    for lib, F in ((mt, mt.nn.functional), (torch, torch.nn.functional)):
        x, w = lib.tensor(x_np, requires_grad=True), lib.tensor(w_np, requires_grad=True)
        y = F.softmax(F.linear(x, w), dim=-1)
        gx, gw = lib.autograd.grad((y * y).sum(), (x, w))
        out.append([g.numpy() for g in (gx, gw)])
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_tensor_backward_create_graph_is_refused_clearly():
    import minitrans as mt

    x = mt.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        (x * x).sum().backward(create_graph=True)
    with pytest.raises(NotImplementedError, match="inputs"):
        (x * x).sum().backward(inputs=[x])
    (x * x).sum().backward(retain_graph=None)          # PyTorch's default spelled out still works
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
