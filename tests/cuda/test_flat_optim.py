"""Adam over flat buffers (one launch for all parameters) against Adam done one parameter at a
time with the same kernel (the per-parameter algorithm it replaces): bit-identical parameters
and state_dict on the CPU; the one-launch ``clip_grad_norm_`` against the per-gradient one."""
import numpy as np
import pytest

import minitrans as mt
from minitrans.backends.cpu import CPUBackend


def _params(seed=0, dtype=np.float32):
    r = np.random.default_rng(seed)
    w = r.standard_normal((4, 3)).astype(dtype)
    return [w.T, r.standard_normal(5).astype(dtype), r.standard_normal((2, 2, 2)).astype(dtype)]  # w.T: not contiguous


def _grads(step, shapes, dtype=np.float32):
    r = np.random.default_rng(100 + step)
    return [r.standard_normal(s).astype(dtype) for s in shapes]


def _per_param_reference(init, steps, skip, lr, betas, eps, wd, decoupled):
    """Adam one parameter at a time with the backend kernel; ``skip[k]`` = params without a grad at step k."""
    ps = [np.ascontiguousarray(p).copy() for p in init]
    m = [np.zeros_like(p) for p in ps]
    v = [np.zeros_like(p) for p in ps]
    t = [0] * len(ps)
    for k in range(steps):
        for i, g in enumerate(_grads(k, [p.shape for p in ps], ps[0].dtype)):
            if i in skip.get(k, ()):
                continue
            t[i] += 1
            CPUBackend.adam_step(ps[i].reshape(-1), g.reshape(-1), m[i].reshape(-1), v[i].reshape(-1), lr, betas[0],
                                 betas[1], eps, wd, t[i], decoupled)
    return ps, m, v, t


@pytest.mark.parametrize("cls", [mt.optim.Adam, mt.optim.AdamW])
@pytest.mark.parametrize("skip", [{}, {1: (1,)}], ids=["all-grads", "one-skips-a-step"])
def test_flat_adam_is_bit_identical_to_per_parameter_adam(cls, skip):
    init = _params()
    ts = [mt.tensor(p, requires_grad=True) for p in init]
    opt = cls(ts, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    steps = 3
    for k in range(steps):
        for i, (t, g) in enumerate(zip(ts, _grads(k, [p.shape for p in init]))):
            t.grad = None if i in skip.get(k, ()) else mt.tensor(g)
        opt.step()
    ps, m, v, t = _per_param_reference(init, steps, skip, 0.05, (0.8, 0.99), 1e-6, 0.1, cls is mt.optim.AdamW)
    sd = opt.state_dict()
    for i in range(len(ts)):
        assert np.array_equal(ts[i].numpy(), ps[i]), i
        st = sd["state"][i]
        assert st["step"] == t[i]
        assert np.array_equal(st["exp_avg"].numpy(), m[i]) and np.array_equal(st["exp_avg_sq"].numpy(), v[i])
        assert st["exp_avg"].shape == ts[i].shape


def test_state_dict_round_trip_and_replaced_data_are_picked_up():
    """Resuming from a state_dict (and a parameter whose .data was replaced) continues exactly as
    an uninterrupted run."""
    init = _params(1)
    shapes = [p.shape for p in init]

    def run(steps, ts, opt, start=0):
        for k in range(start, start + steps):
            for t, g in zip(ts, _grads(k, shapes)):
                t.grad = mt.tensor(g)
            opt.step()

    a = [mt.tensor(p, requires_grad=True) for p in init]
    oa = mt.optim.Adam(a, lr=0.02)
    run(4, a, oa)
    b = [mt.tensor(p, requires_grad=True) for p in init]
    ob = mt.optim.Adam(b, lr=0.02)
    run(2, b, ob)
    sd = ob.state_dict()
    c = [mt.tensor(t.numpy(), requires_grad=True) for t in b]
    oc = mt.optim.Adam(c, lr=0.02)
    oc.load_state_dict(sd)
    run(2, c, oc, start=2)
    for x, y in zip(a, c):
        assert np.array_equal(x.numpy(), y.numpy())


def test_engine_writes_registered_gradients_into_the_optimizer_buffer():
    w = mt.tensor(np.ones(3, np.float32), requires_grad=True)
    opt = mt.optim.Adam([w], lr=0.1)
    (w * 2).sum().backward()
    opt.step()
    opt.zero_grad()
    (w * 3).sum().backward()
    (w * 4).sum().backward()  # accumulates in place
    fl = next(iter(opt._flat.values()))
    assert w.grad._data is fl.views[1][0]
    np.testing.assert_array_equal(fl.bufs[1], np.full(3, 7, np.float32))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_one_launch_clip_matches_per_gradient_clip(norm_type):
    from minitrans.kernels.cuda._util import counters

    init = _params(2, np.float64)
    res = {}
    for dev in ("cpu", "cuda"):
        ts = [mt.tensor(p, device=dev, requires_grad=True) for p in init]
        opt = mt.optim.Adam(ts, lr=0.1)
        for t, g in zip(ts, _grads(0, [p.shape for p in init], np.float64)):
            t.grad = mt.tensor(g * 3, device=dev)
        opt.step()  # packs the gradients into the flat buffer
        opt.zero_grad()
        for t, g in zip(ts, _grads(1, [p.shape for p in init], np.float64)):
            (t * mt.tensor(g * 3, device=dev)).sum().backward()
        counters.reset()
        n = mt.optim.clip_grad_norm_(ts, 1.0, norm_type)
        if dev == "cuda":
            assert counters.launches == 1, counters.launched
        res[dev] = (n.item(), [t.grad.numpy() for t in ts])
    np.testing.assert_allclose(res["cuda"][0], res["cpu"][0], rtol=1e-12)
    for a, b in zip(res["cpu"][1], res["cuda"][1]):
        np.testing.assert_allclose(b, a, rtol=1e-12)
    want = np.linalg.norm(np.concatenate([g.ravel() * 3 for g in _grads(1, [p.shape for p in init], np.float64)]),
                          ord=norm_type)
    np.testing.assert_allclose(res["cpu"][0], want, rtol=1e-12)
