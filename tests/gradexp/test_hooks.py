"""Module hooks: order, arguments and replacement semantics, checked with NumPy and against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

import minitrans as mt
from minitrans import nn


def _linear(rng, n_in=3, n_out=2):
    m = nn.Linear(n_in, n_out).double()
    w, b = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    m.weight.data = mt.tensor(w)
    m.bias.data = mt.tensor(b)
    return m, w, b


def test_forward_hooks_order_arguments_and_replacement():
    m = nn.Identity()
    log = []
    m.register_forward_pre_hook(lambda mod, args: log.append(("pre1", args[0].item())) or (args[0] * 2,))
    m.register_forward_pre_hook(lambda mod, args: log.append(("pre2", args[0].item())))   # sees the doubled input
    m.register_forward_pre_hook(lambda mod, args: log.append(("pre0", args[0].item())), prepend=True)
    m.register_forward_hook(lambda mod, args, out: log.append(("fwd1", args[0].item(), out.item())) or out + 1)
    m.register_forward_hook(lambda mod, args, out: log.append(("fwd2", out.item())))         # sees out + 1
    out = m(mt.tensor(5.0))
    assert out.item() == 11.0
    assert log == [("pre0", 5.0), ("pre1", 5.0), ("pre2", 10.0), ("fwd1", 10.0, 10.0), ("fwd2", 11.0)]


def test_pre_hook_non_tuple_return_becomes_the_single_argument_and_kwargs_hooks():
    m = nn.Identity()
    m.register_forward_pre_hook(lambda mod, args: mt.tensor(7.0))
    assert m(mt.tensor(1.0)).item() == 7.0

    class Scale(nn.Module):
        def forward(self, x, factor=1.0):
            return x * factor

    s = Scale()
    seen = []
    s.register_forward_pre_hook(lambda mod, args, kwargs: (args, {"factor": kwargs["factor"] * 10}), with_kwargs=True)
    s.register_forward_hook(lambda mod, args, kwargs, out: seen.append(dict(kwargs)), with_kwargs=True)
    assert s(mt.tensor(2.0), factor=3.0).item() == 60.0
    assert seen == [{"factor": 30.0}]


def test_handles_remove_hooks_and_work_as_context_managers():
    m = nn.Identity()
    calls = []
    h = m.register_forward_hook(lambda mod, a, o: calls.append(1))
    with m.register_forward_hook(lambda mod, a, o: calls.append(2)):
        m(mt.tensor(1.0))
    m(mt.tensor(1.0))
    h.remove()
    h.remove()                                                   # removing twice is harmless
    m(mt.tensor(1.0))
    assert calls == [1, 2, 1]
    with pytest.raises(TypeError, match="callable"):
        m.register_forward_hook("not a function")


def test_backward_hooks_see_numpy_gradients_and_replace_them():
    rng = np.random.default_rng(0)
    m, w, b = _linear(rng)
    x_np, g_np = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    seen = {}

    def pre(mod, grad_output):
        seen["pre"] = grad_output[0].numpy().copy()
        return (grad_output[0] * 2,)

    def hook(mod, grad_input, grad_output):
        seen["gi"], seen["go"] = grad_input[0].numpy().copy(), grad_output[0].numpy().copy()
        return (grad_input[0] * 3,)

    m.register_full_backward_pre_hook(pre)
    m.register_full_backward_hook(hook)
    x = mt.tensor(x_np, requires_grad=True)
    (m(x) * mt.tensor(g_np)).sum().backward()
    np.testing.assert_allclose(seen["pre"], g_np, rtol=1e-12)
    np.testing.assert_allclose(seen["go"], 2 * g_np, rtol=1e-12)             # the hook sees the replaced grad_output
    np.testing.assert_allclose(seen["gi"], 2 * g_np @ w, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), 6 * g_np @ w, rtol=1e-12)      # replaced grad_input reaches x
    np.testing.assert_allclose(m.weight.grad.numpy(), 2 * g_np.T @ x_np, rtol=1e-12)
    np.testing.assert_allclose(m.bias.grad.numpy(), 2 * g_np.sum(0), rtol=1e-12)


def test_backward_hook_with_no_input_needing_grad_gets_none_and_must_not_replace():
    rng = np.random.default_rng(1)
    m, w, b = _linear(rng)
    seen = []
    h = m.register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go[0].shape)))
    m(mt.tensor(rng.standard_normal((4, 3)))).sum().backward()
    assert seen == [((None,), (4, 2))]
    h.remove()
    m.register_full_backward_hook(lambda mod, gi, go: (mt.zeros(4, 3),))
    with pytest.raises(RuntimeError, match="no input requires gradient"):
        m(mt.tensor(rng.standard_normal((4, 3)))).sum().backward()


@pytest.mark.parametrize("bad, err, match", [
    (lambda gi: (gi[0], gi[0]), RuntimeError, "invalid number of grad_input, got 2, but expected 1"),
    (lambda gi: (mt.zeros(5, dtype=mt.float64),), RuntimeError, r"shape of grad_input\[0\]"),
    (lambda gi: gi[0], TypeError, "must return None or a tuple"),
    (lambda gi: (np.zeros((4, 3)),), TypeError, "must be a Tensor or None"),
])
def test_bad_backward_hook_results_get_clear_errors(bad, err, match):
    rng = np.random.default_rng(2)
    m, _, _ = _linear(rng)
    m.register_full_backward_hook(lambda mod, gi, go: bad(gi))
    with pytest.raises(err, match=match):
        m(mt.tensor(rng.standard_normal((4, 3)), requires_grad=True)).sum().backward()


def test_hooks_off_and_no_grad_mode_leave_forward_unchanged():
    rng = np.random.default_rng(3)
    m, w, b = _linear(rng)
    x = rng.standard_normal((4, 3))
    m.register_full_backward_hook(lambda mod, gi, go: None)
    with mt.no_grad():
        y = m(mt.tensor(x))
    assert y.grad_fn is None
    np.testing.assert_allclose(y.numpy(), x @ w.T + b, rtol=1e-12)


# ----------------------------------------------------------------------------- the same scenario in PyTorch
def _scenario(lib, nn_mod, arrays):
    """Two modules in a Sequential-like chain, several inputs/outputs, every hook kind; returns (log, grads)."""
    log = []

    class Two(nn_mod.Module):
        def forward(self, a, k, b):
            return a * b * k, a + b, "tag"

    class Join(nn_mod.Module):
        def forward(self, pair):
            return (pair[0] * pair[1]).sum()

    def shapes(gs):
        return tuple(None if g is None else tuple(g.shape) for g in gs)

    two, join = Two(), Join()
    two.register_forward_pre_hook(lambda m, args: log.append(("pre", len(args))) or (args[0] * 2, args[1], args[2]))
    two.register_forward_hook(lambda m, args, out: log.append(("fwd", round(float(args[0].detach().sum()), 9))) or
                              (out[0] * 1.5, out[1], out[2]))
    two.register_full_backward_pre_hook(lambda m, go: log.append(("bpre", shapes(go))) or (go[0], go[1] * 4, None))
    two.register_full_backward_hook(lambda m, gi, go: log.append(("bw", shapes(gi), shapes(go))) or
                                    (gi[0] * 3, None, gi[2]))
    two.register_full_backward_hook(lambda m, gi, go: log.append(("bw2", shapes(gi))))
    join.register_full_backward_hook(lambda m, gi, go: log.append(("join", shapes(gi), shapes(go))))
    a = lib.tensor(arrays[0], requires_grad=True)
    b = lib.tensor(arrays[1], requires_grad=True)
    o1, o2, tag = two(a, 0.5, b)
    join((o1, o2)).backward()
    return log, (a.grad.numpy(), b.grad.numpy())


def test_hooks_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    arrays = (rng.standard_normal((2, 3)), rng.standard_normal(3))
    log_mt, grads_mt = _scenario(mt, nn, arrays)
    log_t, grads_t = _scenario(torch, torch.nn, arrays)
    assert log_mt == log_t
    for g_mt, g_t in zip(grads_mt, grads_t):
        np.testing.assert_allclose(g_mt, g_t, rtol=1e-12)


def test_hooked_linear_gradients_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    m, w, b = _linear(rng)
    tm = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        tm.weight.copy_(torch.tensor(w))
        tm.bias.copy_(torch.tensor(b))
    x = rng.standard_normal((4, 3))
    grads = []
    for lib, mod in ((mt, m), (torch, tm)):
        mod.register_full_backward_pre_hook(lambda _, go: (go[0].clamp(min=0.0),))
        mod.register_full_backward_hook(lambda _, gi, go: (gi[0] * 2,))
        xt = lib.tensor(x, requires_grad=True)
        (mod(xt) ** 2).sum().backward()
        grads.append([t.numpy() for t in (xt.grad, mod.weight.grad.detach() if lib is torch else mod.weight.grad)])
    for a, c in zip(*grads):
        np.testing.assert_allclose(a, c, rtol=1e-12)
