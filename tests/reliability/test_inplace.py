"""In-place safety: every in-place write bumps the tensor's version counter, and a backward
that needs a tensor changed since it was saved raises instead of giving a wrong gradient
(including an optimizer step between forward and backward, and the fused ops that save a
reshaped view of their input or weight). Every test runs on each device of the ``device``
fixture (cpu, and cuda under Numba's simulator)."""
from __future__ import annotations

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
import minitrans.nn.functional as F


def leaf(device, *shape):
    return mt.randn(*shape, device=device, requires_grad=True)


def randn(device, *shape):
    return mt.randn(*shape, device=device)


# ----------------------------------------------------------------------------- version counter
@pytest.mark.parametrize("op", [
    lambda t: t.add_(1.0), lambda t: t.add_(mt.ones(3, device=t.device), alpha=2.0), lambda t: t.sub_(1.0),
    lambda t: t.mul_(2.0), lambda t: t.div_(2.0), lambda t: t.zero_(), lambda t: t.fill_(3.0),
    lambda t: t.copy_(mt.ones(3, device=t.device)), lambda t: t.clamp_(0.0, 1.0),
], ids=["add_", "add_alpha", "sub_", "mul_", "div_", "zero_", "fill_", "copy_", "clamp_"])
def test_every_in_place_op_bumps_the_version(device, op):
    t = randn(device, 3)
    v = t._version_counter[0]
    assert op(t) is t
    assert t._version_counter[0] == v + 1


def test_failed_in_place_op_does_not_bump_the_version(device):
    t = randn(device, 3)
    with pytest.raises(ValueError):
        t.add_(mt.ones(4, device=device))
    assert t._version_counter[0] == 0


@pytest.mark.parametrize("make_opt", [lambda ps: mt.optim.SGD(ps, lr=0.1),
                                      lambda ps: mt.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
                                      lambda ps: mt.optim.Adam(ps, lr=0.1),
                                      lambda ps: mt.optim.AdamW(ps, lr=0.1)],
                         ids=["sgd", "sgd_momentum", "adam", "adamw"])
def test_optimizer_step_bumps_the_version_of_updated_parameters_only(device, make_opt):
    a, b = leaf(device, 2, 3), leaf(device, 3)
    opt = make_opt([a, b])
    (a * 2.0).sum().backward()                    # b gets no gradient, so the step leaves it alone
    opt.step()
    assert a._version_counter[0] == 1 and b._version_counter[0] == 0


def test_detach_and_data_share_the_version_counter(device):
    w = leaf(device, 3)
    w.detach().mul_(2.0)
    assert w._version_counter[0] == 1
    w.data.add_(1.0)
    assert w._version_counter[0] == 2


# ----------------------------------------------------------------------------- saved tensors
def _raises_in_place(loss, *leaves):
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()
    for t in leaves:
        assert t.grad is None, "a gradient was written before the error"


CASES = {
    # name: (build(x) -> output, which tensor to modify in place)
    "mul_input": (lambda x, c: x * c, "c"),
    "div_input": (lambda x, c: x / c, "c"),
    "matmul": (lambda x, c: x @ c.reshape(3, 1), None),   # c's reshape is a view node; modify c's source
    "exp_output": (lambda x, c: x.exp(), "out"),
    "sigmoid_output": (lambda x, c: x.sigmoid(), "out"),
}


@pytest.mark.parametrize("name", ["mul_input", "div_input", "exp_output", "sigmoid_output"])
def test_modified_saved_tensor_raises(device, name):
    build, which = CASES[name]
    x, c = leaf(device, 4, 3), randn(device, 4, 3) + 3.0
    out = build(x, c)
    with mt.no_grad():
        (c if which == "c" else out).mul_(2.0)
    _raises_in_place(out.sum(), x)


def test_matmul_operand_changed_in_place_raises(device):
    x, w = leaf(device, 4, 3), randn(device, 3, 2)
    y = x @ w
    w.add_(1.0)
    _raises_in_place(y.sum(), x)


def test_linear_input_and_weight_changed_in_place_raise(device):
    """Linear saves an (N, in) *view* of x: the change must still be seen through the view."""
    w, x = leaf(device, 4, 3), randn(device, 2, 5, 3)
    y = F.linear(x, w)
    x.add_(1.0)
    _raises_in_place(y.sum(), w)
    w2, x2 = leaf(device, 4, 3), leaf(device, 2, 3)
    y2 = F.linear(x2, w2)
    with mt.no_grad():
        w2.mul_(0.5)
    _raises_in_place(y2.sum(), w2, x2)


def test_layer_norm_weight_and_input_changed_in_place_raise(device):
    """LayerNorm saves its weight flattened and its input as a (rows, D) view."""
    ln = nn.LayerNorm(3)
    ln.to(device)
    x = leaf(device, 2, 3)
    y = ln(x)
    with mt.no_grad():
        ln.weight.mul_(2.0)
    _raises_in_place(y.sum(), x, ln.weight)
    x2 = randn(device, 4, 3)
    y2 = ln(x2)
    x2.mul_(2.0)
    _raises_in_place(y2.sum(), ln.weight)


def test_attention_inputs_changed_in_place_raise(device):
    q, k, v = randn(device, 1, 4, 8), randn(device, 1, 4, 8), leaf(device, 1, 4, 8)
    o = F.scaled_dot_product_attention(q, k, v)
    k.add_(1.0)
    _raises_in_place(o.sum(), v)


def test_cross_entropy_logits_changed_in_place_raise(device):
    w = leaf(device, 3, 5)
    logits = w * 1.0
    loss = F.cross_entropy(logits, mt.tensor([0, 1, 4], device=device))
    with mt.no_grad():
        logits.add_(1.0)
    _raises_in_place(loss, w)


def test_unsaved_or_copied_inputs_may_change(device):
    """No false alarms: Add saves nothing, and a transposed input reaches LayerNorm as a copy."""
    w, c = leaf(device, 3), randn(device, 3)
    y = w + c
    c.add_(1.0)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), 1.0)
    ln = nn.LayerNorm(2)
    ln.to(device)
    x = randn(device, 2, 3)
    y = ln(x.transpose(0, 1))
    x.mul_(2.0)                 # the transposed view is a different tensor; its data was copied
    y.sum().backward()
    assert ln.weight.grad is not None


# ----------------------------------------------------------------------------- optimizer between forward and backward
def _model(kind, device):
    mt.manual_seed(0)
    if kind == "linear":
        model, loss = nn.Linear(3, 4), lambda m: m(randn(device, 5, 3)).sum()
    elif kind == "mlp":
        model = nn.Sequential(nn.Linear(3, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 2))
        loss = lambda m: F.cross_entropy(m(randn(device, 5, 3)), mt.tensor([0, 1, 1, 0, 1], device=device))  # noqa: E731
    elif kind == "layernorm":
        model, loss = nn.LayerNorm(4), lambda m: (m(randn(device, 3, 4)) * randn(device, 3, 4)).sum()
    elif kind == "encoder":
        model = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
        loss = lambda m: m(randn(device, 1, 3, 4)).square().sum()  # noqa: E731
    else:
        raise AssertionError(kind)
    model.to(device)
    return model, loss


@pytest.mark.parametrize("kind", ["linear", "mlp", "layernorm", "encoder"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_optimizer_step_between_forward_and_backward_raises(device, kind, opt_name):
    model, loss_fn = _model(kind, device)
    opt = {"sgd": mt.optim.SGD, "adam": mt.optim.Adam, "adamw": mt.optim.AdamW}[opt_name](model.parameters(), lr=0.1)
    loss_fn(model).backward()              # every parameter now has a .grad
    loss = loss_fn(model)                  # a graph that saved the parameters
    opt.step()                             # ... which are then updated in place
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()


def test_step_after_backward_is_fine_and_next_graph_sees_new_weights(device):
    model, loss_fn = _model("mlp", device)
    opt = mt.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(3):
        before = [p.numpy().copy() for p in model.parameters()]
        opt.zero_grad()
        loss = loss_fn(model)
        loss.backward()                     # no in-place error: the step comes after backward
        opt.step()
        losses.append(loss.item())
        assert all(not np.array_equal(b, p.numpy()) for b, p in zip(before, model.parameters()))
    assert losses[0] != losses[1] != losses[2]   # each new graph sees the updated weights


def test_load_state_dict_between_forward_and_backward_raises(device):
    model, loss_fn = _model("linear", device)
    loss = loss_fn(model)
    model.load_state_dict({k: v * 2.0 for k, v in model.state_dict().items()})
    with pytest.raises(RuntimeError, match="in-place"):
        loss.backward()


@pytest.mark.parametrize("view", [lambda x: x.reshape(6), lambda x: x.transpose(0, 1), lambda x: x[1:],
                                  lambda x: x.unsqueeze(0).expand(2, 2, 3)],
                         ids=["reshape", "transpose", "slice", "expand"])
def test_views_share_the_version_counter_with_their_base(device, view):
    w, x = leaf(device, 1), randn(device, 2, 3)
    y = view(x) * w                      # Mul saves the view
    x.add_(1.0)                          # ... whose storage changes through the base
    _raises_in_place(y.sum(), w)
