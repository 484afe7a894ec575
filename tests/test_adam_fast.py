"""Adam's steady-state step (one launch over the flat buffers, no per-parameter bookkeeping) is
bit-identical to the per-parameter update, and falls back correctly whenever anything the flat
buffers rely on changes: a replaced ``.data``, a replaced state entry, a parameter without a
gradient, a loaded state dict, zero_grad(set_to_none=False)."""
import numpy as np
import pytest

import minitrans as mt
from kernels.cpu.adam import adam_step
from minitrans.optim import adam as adam_module

SHAPES = [(7, 5), (5,), (3, 4, 2)]


class Reference:
    """Today's per-parameter update: the kernel on each parameter's own arrays."""

    def __init__(self, values, lr, betas, eps, wd, decoupled):
        self.p = [v.copy() for v in values]
        self.m = [np.zeros_like(v) for v in values]
        self.v = [np.zeros_like(v) for v in values]
        self.steps = [0] * len(values)
        self.args = (lr, betas[0], betas[1], eps, wd)
        self.decoupled = decoupled

    def step(self, grads):
        for i, g in enumerate(grads):
            if g is None:
                continue
            self.steps[i] += 1
            adam_step(self.p[i].reshape(-1), np.ascontiguousarray(g).reshape(-1), self.m[i].reshape(-1),
                      self.v[i].reshape(-1), *self.args, self.steps[i], self.decoupled)


def _grads(k, rng_seed=0):
    rng = np.random.default_rng(rng_seed + k)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _backward(params, grads):
    """A loss whose gradient for each parameter is exactly ``grads[i]`` (None: not used)."""
    loss = None
    for p, g in zip(params, grads):
        if g is None:
            continue
        term = (p * mt.tensor(g)).sum()
        loss = term if loss is None else loss + term
    loss.backward()


@pytest.mark.parametrize("cls,wd", [(mt.optim.Adam, 0.0), (mt.optim.Adam, 0.01), (mt.optim.AdamW, 0.05)])
def test_steady_steps_are_bit_identical_to_per_parameter_updates(cls, wd, monkeypatch):
    rng = np.random.default_rng(7)
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    params = [mt.tensor(v.copy(), requires_grad=True) for v in values]
    opt = cls(params, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd)
    ref = Reference(values, 1e-2, (0.8, 0.95), 1e-6, wd, cls is mt.optim.AdamW)
    syncs = []
    real_sync = adam_module._Flat.sync
    monkeypatch.setattr(adam_module._Flat, "sync", lambda self, state: (syncs.append(1), real_sync(self, state)))
    for k in range(12):
        grads = _grads(k)
        if k == 6:
            grads[1] = None                           # one parameter without a gradient: steps differ after
        _backward(params, grads)
        opt.step()
        ref.step(grads)
        opt.zero_grad()
        if k == 3:                                    # .data replaced: copied back into the buffer next step
            new = rng.standard_normal(SHAPES[0]).astype(np.float32)
            params[0].data = mt.tensor(new.copy())
            ref.p[0] = new
        if k == 4:                                    # a state entry replaced by a new array
            new = np.abs(rng.standard_normal(SHAPES[2])).astype(np.float32)
            opt.state[params[2]]["exp_avg_sq"] = new.copy()
            ref.v[2] = new
        if k == 8:                                    # a state dict reloaded
            opt.load_state_dict(opt.state_dict())
        for p, want in zip(params, ref.p):
            np.testing.assert_array_equal(p.numpy(), want, err_msg=f"after step {k}")
    # steps after which nothing changed took the short way (until step 6: from then on the step
    # counts differ and every step re-synchronises and launches per parameter)
    assert len(syncs) < 12


def test_steady_steps_skip_the_bookkeeping(monkeypatch):
    params = [mt.tensor(np.ones(s, np.float32), requires_grad=True) for s in SHAPES]
    opt = mt.optim.Adam(params, lr=1e-3)
    syncs = []
    real_sync = adam_module._Flat.sync
    monkeypatch.setattr(adam_module._Flat, "sync", lambda self, state: (syncs.append(1), real_sync(self, state)))
    for k in range(5):
        _backward(params, _grads(k))
        opt.step()
        opt.zero_grad()
    assert len(syncs) == 1       # the first step packs the buffers; the engine then writes gradients into them
    assert all(opt.state[p]["step"] == 5 for p in params)
    assert all(p._version == 5 for p in params)


def test_zero_grad_keeping_arrays_still_updates_correctly():
    values = [np.full(s, 0.5, np.float32) for s in SHAPES]
    params = [mt.tensor(v.copy(), requires_grad=True) for v in values]
    opt = mt.optim.Adam(params, lr=1e-2)
    ref = Reference(values, 1e-2, (0.9, 0.999), 1e-8, 0.0, False)
    for k in range(4):
        grads = _grads(k, 100)
        _backward(params, grads)
        opt.step()
        ref.step(grads)
        opt.zero_grad(set_to_none=False)
        for p, want in zip(params, ref.p):
            np.testing.assert_array_equal(p.numpy(), want)


def test_a_parameter_listed_twice_is_updated_once():
    p = mt.tensor(np.full((3,), 1.0, np.float32), requires_grad=True)
    q = mt.tensor(np.full((2,), 1.0, np.float32), requires_grad=True)
    opt = mt.optim.Adam([p, q, p], lr=0.1)
    ref = Reference([p.numpy(), q.numpy()], 0.1, (0.9, 0.999), 1e-8, 0.0, False)
    for k in range(3):
        g = [np.full((3,), k + 1.0, np.float32), np.full((2,), -1.0, np.float32)]
        _backward([p, q], g)
        opt.step()
        ref.step(g)
        opt.zero_grad()
        np.testing.assert_array_equal(p.numpy(), ref.p[0])
        np.testing.assert_array_equal(q.numpy(), ref.p[1])
