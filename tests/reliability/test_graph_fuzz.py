"""Graph fuzzing: random programs of ≥ 10 ops over a pool of values (so intermediate results
are reused, and shapes (2, 3), (3,), (2, 1), (1, 3) broadcast against each other), checked
end to end with float64 ``gradcheck``. A few hundred programs normally; ten times as many
with ``MINITRANS_LONG=1``.

Every op is smooth on the values it can see (no relu/abs/max kinks, divisions by 1 + y²,
logs of 1 + x²), so central differences are valid everywhere.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minitrans as mt
import minitrans.nn.functional as F
from helpers import examples
from minitrans.autograd import gradcheck

SHAPES = [(2, 3), (3,), (2, 1), (1, 3)]
FULL = (2, 3)


def full(x):
    """x broadcast to (2, 3) through the graph (Expand), so that shape ops see one shape."""
    return x if tuple(x.shape) == FULL else x.expand(*FULL)


# op name -> (number of pool arguments, fn(*args) -> a value of one of SHAPES)
OPS = {
    "add": (2, lambda a, b: a + b),
    "sub": (2, lambda a, b: a - b),
    "mul": (2, lambda a, b: a * b.tanh()),
    "div": (2, lambda a, b: a / (1.0 + b * b)),
    "scalar": (1, lambda a: 0.5 * a - 0.25),
    "rsub": (1, lambda a: 1.0 - a),
    "pow": (1, lambda a: (a * 0.5) ** 2 + a ** 3 * 0.1),
    "exp": (1, lambda a: a.tanh().exp()),
    "log": (1, lambda a: (1.0 + a * a).log()),
    "sqrt": (1, lambda a: (1.0 + a * a).sqrt()),
    "sigmoid": (1, lambda a: a.sigmoid()),
    "gelu": (1, lambda a: a.gelu()),
    "neg": (1, lambda a: -a),
    "sum0": (1, lambda a: full(a).sum(0) * 0.5),                     # (3,)
    "sum1": (1, lambda a: full(a).sum(1, keepdim=True) * 0.5),       # (2, 1)
    "mean0": (1, lambda a: full(a).mean(0, keepdim=True)),           # (1, 3)
    "var1": (1, lambda a: full(a).var(1, keepdim=True)),             # (2, 1)
    "softmax": (1, lambda a: F.softmax(full(a), dim=-1)),
    "log_softmax": (1, lambda a: F.log_softmax(full(a), dim=0)),
    "layer_norm": (2, lambda a, w: F.layer_norm(full(a) + 0.1 * full(w), (3,))),
    "matmul": (3, lambda a, b, c: full(a) @ (full(b).T @ full(c)) * 0.2),
    "transpose": (1, lambda a: full(a).T.reshape(3, 2).T.reshape(2, 3)),
    "cat_slice": (2, lambda a, b: mt.cat([full(a), full(b)], 0)[1:3]),
    "stack_sum": (2, lambda a, b: mt.stack([full(a), full(b)], 2).sum(-1)),
    "gather": (1, lambda a: full(a)[mt.tensor([1, 1])]),              # repeated index: scatter-add backward
    "index": (1, lambda a: full(a)[:, [2, 0, 0]]),
    "where": (2, lambda a, b: mt.where(mt.tensor([[True, False, True], [False, True, True]]), a, b)),
    "masked_fill": (1, lambda a: full(a).masked_fill(mt.tensor([False, True, False]), 0.5)),
    "unsqueeze": (1, lambda a: full(a).unsqueeze(0).squeeze(0).flatten().reshape(2, 3)),
    "cross_entropy": (1, lambda a: F.cross_entropy(full(a), mt.tensor([2, 0]), reduction="none").unsqueeze(1)),
}
NAMES = sorted(OPS)


@st.composite
def programs(draw):
    """(leaf shapes, [(op, argument indices into the pool)], output indices, value seed)."""
    n_leaves = draw(st.integers(1, 3))
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(n_leaves)]
    steps = []
    for i in range(draw(st.integers(10, 16))):
        name = draw(st.sampled_from(NAMES))
        n_args = OPS[name][0]
        pool = n_leaves + i
        # favour recent values (a deep chain) but reuse any earlier one, leaves included
        args = [draw(st.one_of(st.integers(max(0, pool - 2), pool - 1), st.integers(0, pool - 1)))
                for _ in range(n_args)]
        steps.append((name, args))
    n_values = n_leaves + len(steps)
    outs = sorted(set([n_values - 1] + draw(st.lists(st.integers(0, n_values - 1), max_size=2))))
    return shapes, steps, outs, draw(st.integers(0, 2 ** 32 - 1))


def replay(steps, outs):
    def fn(*leaves):
        pool = list(leaves)
        for name, args in steps:
            pool.append(OPS[name][1](*(pool[a] for a in args)))
        # the output: the last value plus two earlier ones (their gradients flow on several paths)
        return tuple(pool[i] for i in outs)

    return fn


@settings(max_examples=examples(250))
@given(programs())
def test_random_graphs_pass_gradcheck(program):
    shapes, steps, outs, seed = program
    rng = np.random.default_rng(seed)
    leaves = [mt.tensor(rng.uniform(-1.0, 1.0, size=s), dtype=mt.float64, requires_grad=True) for s in shapes]
    fn = replay(steps, outs)
    for o in fn(*leaves):
        assert np.isfinite(o.numpy()).all()
    assert gradcheck(fn, leaves, atol=1e-6, rtol=1e-4)


def test_the_fuzzer_can_fail():
    """A wrong backward hidden in a deep graph is found (the fuzzer is not vacuous)."""
    import pytest

    from minitrans.autograd import GradcheckError
    from minitrans.ops import elementwise as E

    good = E.Tanh.backward
    E.Tanh.backward = staticmethod(lambda ctx, g: good(ctx, g) * 1.05)
    try:
        steps = [("mul", [0, 0])] + [("neg", [i]) for i in range(1, 10)]
        x = mt.tensor([[0.3, -0.2, 0.5], [0.1, 0.7, -0.4]], dtype=mt.float64, requires_grad=True)
        with pytest.raises(GradcheckError):
            gradcheck(replay(steps, [10]), [x])
    finally:
        E.Tanh.backward = good
