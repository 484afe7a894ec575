"""The two engine seams data-parallel training uses: a leaf's post-accumulate hook runs as soon as
its gradient is final (before the rest of the graph is walked), and queued callbacks run once
the whole backward has finished."""
import numpy as np
import pytest

import minitrans as mt
from minitrans.autograd.engine import queue_callback


def test_post_accumulate_hook_sees_the_summed_grad_before_backward_walks_on():
    rng = np.random.default_rng(0)
    a0, b0, x0 = rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=(5, 3))
    a = mt.tensor(a0, dtype=mt.float64, requires_grad=True)      # used twice: two edges into it
    b = mt.tensor(b0, dtype=mt.float64, requires_grad=True)
    x = mt.tensor(x0, dtype=mt.float64, requires_grad=True)
    events = []
    b.register_post_accumulate_grad_hook(lambda t: events.append(("b", t.grad.numpy().copy())))
    a.register_post_accumulate_grad_hook(lambda t: events.append(("a", t.grad.numpy().copy())))
    x.register_post_accumulate_grad_hook(lambda t: events.append(("x", None)))
    h = (x @ a).tanh()                      # a's first use
    h.register_hook(lambda g: events.append(("h", None)))     # runs when the walk reaches h
    loss = ((h @ b).sum() + (a * a).sum())  # b is reached first in backward, x last
    queue_callback(lambda: events.append(("done", None)))
    loss.backward()
    names = [e[0] for e in events]
    assert names.count("a") == 1 and names.count("b") == 1
    # b's gradient is final (its only edge is h @ b) before the walk reaches h: its hook runs first
    assert names.index("b") < names.index("h") < names.index("x") and names[-1] == "done"
    # the values a hook saw are the complete gradients (NumPy reference)
    t = np.tanh(x0 @ a0)
    g_h = np.ones((5, 2)) @ b0.T
    want_a = x0.T @ (g_h * (1 - t ** 2)) + 2 * a0
    np.testing.assert_allclose(dict(events)["a"], want_a, rtol=1e-12)
    np.testing.assert_allclose(dict(events)["b"], t.T @ np.ones((5, 2)), rtol=1e-12)


def test_hook_handle_removes_and_non_leaf_is_refused():
    w = mt.ones(3, requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(1))
    (w * 2).sum().backward()
    handle.remove()
    (w * 2).sum().backward()
    assert seen == [1]
    np.testing.assert_array_equal(w.grad.numpy(), [4.0, 4.0, 4.0])
    with pytest.raises(RuntimeError, match="leaf tensors"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_callbacks_are_dropped_when_backward_fails():
    w = mt.ones(2, requires_grad=True)
    ran = []

    def boom(g):
        raise ValueError("hook failed")

    w.register_hook(boom)
    queue_callback(lambda: ran.append(1))
    with pytest.raises(ValueError, match="hook failed"):
        (w * 3).sum().backward()
    v = mt.ones(2, requires_grad=True)
    (v * 3).sum().backward()
    assert ran == []
