"""Optimizers against hand-unrolled NumPy versions of PyTorch's update formulas; gradient clipping;
learning-rate schedules against their closed forms; optimizer state dicts."""
import math

import numpy as np
import pytest

import minitrans as mt
from minitrans.optim import SGD, Adam, AdamW, clip_grad_norm_
from minitrans.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, WarmupCosineLR, WarmupInverseSqrtLR

STEPS = 5
SHAPES = [(3, 4), (5,), (2, 1, 3)]


def _problem(seed, dtype=np.float64):
    """Parameters and a gradient sequence: (params0, grads[step][param])."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return params, grads


def _run(make_opt, params0, grads):
    ps = [mt.tensor(p.copy(), requires_grad=True) for p in params0]
    opt = make_opt(ps)
    history = []
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = mt.tensor(g.copy())
        opt.step()
        history.append([p.numpy().copy() for p in ps])
    return history


# ----------------------------------------------------------------------------- NumPy references
def np_sgd(params, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    ps, bufs, history = [p.copy() for p in params], [None] * len(params), []
    for gs in grads:
        for i, g in enumerate(gs):
            d_p = g + weight_decay * ps[i]
            if momentum:
                bufs[i] = d_p.copy() if bufs[i] is None else momentum * bufs[i] + (1 - dampening) * d_p
                d_p = d_p + momentum * bufs[i] if nesterov else bufs[i]
            ps[i] = ps[i] - lr * d_p
        history.append([p.copy() for p in ps])
    return history


def np_adam(params, grads, lr, betas, eps, weight_decay, decoupled):
    b1, b2 = betas
    ps = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in ps]
    v = [np.zeros_like(p) for p in ps]
    history = []
    for t, gs in enumerate(grads, start=1):
        for i, g in enumerate(gs):
            if decoupled:
                ps[i] = ps[i] * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * ps[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = m[i] / (1 - b1 ** t)
            v_hat = v[i] / (1 - b2 ** t)
            ps[i] = ps[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append([p.copy() for p in ps])
    return history


def _compare(got, want, rtol):
    for step, (a, b) in enumerate(zip(got, want), start=1):
        for i, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol, err_msg=f"step {step}, parameter {i}")


SGD_CASES = [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.9, dampening=0.3),
             dict(lr=0.1, momentum=0.8, nesterov=True), dict(lr=0.1, weight_decay=0.01),
             dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)]


@pytest.mark.parametrize("kw", SGD_CASES, ids=[str(c) for c in SGD_CASES])
def test_sgd_matches_pytorch_formulas(kw):
    params, grads = _problem(0)
    _compare(_run(lambda ps: SGD(ps, **kw), params, grads), np_sgd(params, grads, **kw), 1e-12)


ADAM_CASES = [(Adam, dict(lr=1e-2)), (Adam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
              (AdamW, dict(lr=1e-2)), (AdamW, dict(lr=3e-2, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.5))]


@pytest.mark.parametrize("cls,kw", ADAM_CASES, ids=[f"{c.__name__} {k}" for c, k in ADAM_CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_matches_pytorch_formulas(cls, kw, dtype):
    params, grads = _problem(1, dtype)
    full = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0 if cls is Adam else 1e-2)
    full.update(kw)
    want = np_adam([p.astype(np.float64) for p in params], [[g.astype(np.float64) for g in gs] for gs in grads],
                   full["lr"], full["betas"], full["eps"], full["weight_decay"], decoupled=cls is AdamW)
    got = _run(lambda ps: cls(ps, **kw), params, grads)
    assert got[-1][0].dtype == dtype
    _compare(got, want, 1e-10 if dtype == np.float64 else 2e-5)


def test_adamw_default_weight_decay_and_adam_l2_differ():
    params, grads = _problem(2)
    a = _run(lambda ps: Adam(ps, lr=0.01, weight_decay=0.1), params, grads)[-1]
    w = _run(lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1), params, grads)[-1]
    assert max(np.abs(x - y).max() for x, y in zip(a, w)) > 1e-4
    assert AdamW([mt.zeros(1, requires_grad=True)]).param_groups[0]["weight_decay"] == 1e-2


def test_step_skips_parameters_without_grad():
    p = mt.tensor(np.ones(3), requires_grad=True)
    q = mt.tensor(np.ones(3), requires_grad=True)
    opt = Adam([p, q], lr=0.1)
    p.grad = mt.tensor(np.ones(3))
    opt.step()
    assert np.all(q.numpy() == 1.0) and np.all(p.numpy() < 1.0)
    opt.zero_grad()
    assert p.grad is None


def test_param_groups_have_their_own_lr():
    p, q = (mt.tensor(np.zeros(2), requires_grad=True) for _ in range(2))
    opt = SGD([{"params": [p]}, {"params": [q], "lr": 1.0}], lr=0.1)
    p.grad = q.grad = mt.tensor(np.ones(2))
    opt.step()
    np.testing.assert_allclose(p.numpy(), -0.1)
    np.testing.assert_allclose(q.numpy(), -1.0)


def test_invalid_hyperparameters():
    p = [mt.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError):
        SGD(p, lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)


# ----------------------------------------------------------------------------- gradient clipping
def _with_grads(grads):
    ps = []
    for g in grads:
        p = mt.tensor(np.zeros(g.shape), requires_grad=True)
        p.grad = mt.tensor(g.copy())
        ps.append(p)
    return ps


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm(max_norm):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(s) for s in SHAPES]
    ps = _with_grads(grads)
    total = np.linalg.norm(np.concatenate([g.ravel() for g in grads]))
    got = clip_grad_norm_(ps, max_norm)
    assert isinstance(got, mt.Tensor) and got.shape == ()
    np.testing.assert_allclose(got.item(), total, rtol=1e-12)
    coef = min(1.0, max_norm / (total + 1e-6))
    for p, g in zip(ps, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-12)
    after = np.linalg.norm(np.concatenate([p.grad.numpy().ravel() for p in ps]))
    assert after <= max_norm * (1 + 1e-9) or max_norm > total


def test_clip_grad_norm_inf_and_nonfinite():
    grads = [np.array([1.0, -3.0]), np.array([[2.0]])]
    ps = _with_grads(grads)
    assert clip_grad_norm_(ps, 1.5, norm_type=math.inf).item() == 3.0
    np.testing.assert_allclose(ps[0].grad.numpy(), np.array([1.0, -3.0]) * 1.5 / (3.0 + 1e-6))
    bad = _with_grads([np.array([np.inf, 1.0])])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(bad, 1.0, error_if_nonfinite=True)


# ----------------------------------------------------------------------------- schedules
def _opt(lr=1.0):
    return SGD([mt.zeros(1, requires_grad=True)], lr=lr)


def _lrs(sched, n):
    out = [sched.get_last_lr()[0]]
    for _ in range(n):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
    return np.array(out)


def test_warmup_inverse_sqrt():
    w, base = 10, 0.5
    lrs = _lrs(WarmupInverseSqrtLR(_opt(base), warmup_steps=w), 40)
    s = np.maximum(np.arange(41), 1)
    np.testing.assert_allclose(lrs[1:w + 1], base * np.arange(1, w + 1) / w, rtol=1e-12)   # linear warm-up
    np.testing.assert_allclose(lrs[w:], base * np.sqrt(w / s[w:]), rtol=1e-12)          # ∝ 1/√step after
    assert np.argmax(lrs) == w and math.isclose(lrs.max(), base)                         # peak = base at warmup
    assert np.all(np.diff(lrs[1:w + 1]) > 0) and np.all(np.diff(lrs[w:]) < 0)


def test_warmup_inverse_sqrt_paper_formula():
    d_model, w = 512, 4000
    sched = WarmupInverseSqrtLR(_opt(1.0), warmup_steps=w, d_model=d_model)
    for step in range(1, 10001):
        sched.step()
        if step in (1, 2, 100, 3999, 4000, 4001, 10000):
            paper = d_model ** -0.5 * min(step ** -0.5, step * w ** -1.5)
            assert math.isclose(sched.get_last_lr()[0], paper, rel_tol=1e-12), step
    with pytest.raises(ValueError):
        WarmupInverseSqrtLR(_opt(), warmup_steps=0)


def test_cosine_annealing():
    base, eta_min, T = 0.2, 0.01, 8
    lrs = _lrs(CosineAnnealingLR(_opt(base), T_max=T, eta_min=eta_min), T)
    want = eta_min + (base - eta_min) * (1 + np.cos(np.pi * np.arange(T + 1) / T)) / 2
    np.testing.assert_allclose(lrs, want, rtol=1e-12)
    assert math.isclose(lrs[0], base) and math.isclose(lrs[-1], eta_min)


def test_warmup_cosine():
    base, w, total, mf = 1.0, 4, 12, 0.1
    lrs = _lrs(WarmupCosineLR(_opt(base), warmup_steps=w, total_steps=total, min_factor=mf), 14)
    for s, lr in enumerate(lrs):
        if s < w:
            want = (s + 1) / w
        else:
            t = min(1.0, (s - w) / (total - w))
            want = mf + (1 - mf) * (1 + math.cos(math.pi * t)) / 2
        assert math.isclose(lr, base * want, rel_tol=1e-12), s
    assert math.isclose(lrs.max(), base) and math.isclose(lrs[-1], base * mf)


def test_lambda_lr_and_initial_lr():
    opt = SGD([{"params": [mt.zeros(1, requires_grad=True)], "lr": 2.0},
               {"params": [mt.zeros(1, requires_grad=True)], "lr": 0.5}], lr=1.0)
    sched = LambdaLR(opt, lambda s: 0.9 ** s)
    for s in range(5):
        assert sched.get_last_lr() == pytest.approx([2.0 * 0.9 ** s, 0.5 * 0.9 ** s], rel=1e-12)
        sched.step()
    assert [g["initial_lr"] for g in opt.param_groups] == [2.0, 0.5]


def test_scheduler_state_dict_resumes():
    a = WarmupInverseSqrtLR(_opt(1.0), warmup_steps=5)
    for _ in range(7):
        a.step()
    b = WarmupInverseSqrtLR(_opt(1.0), warmup_steps=5)
    b.load_state_dict(a.state_dict())
    a.step()
    b.step()
    assert a.get_last_lr() == b.get_last_lr()


# ----------------------------------------------------------------------------- optimizer state dicts
@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda ps: Adam(ps, lr=0.01, weight_decay=0.1),
                                  lambda ps: AdamW(ps, lr=0.01)], ids=["SGD", "Adam", "AdamW"])
def test_optimizer_state_dict_roundtrip(make, tmp_path):
    params, grads = _problem(4)
    ps = [mt.tensor(p.copy(), requires_grad=True) for p in params]
    opt = make(ps)

    def step(o, qs, gs):
        for q, g in zip(qs, gs):
            q.grad = mt.tensor(g.copy())
        o.step()

    for gs in grads[:2]:
        step(opt, ps, gs)
    mt.save({"opt": opt.state_dict()}, tmp_path / "opt.npz")
    sd = mt.load(tmp_path / "opt.npz")["opt"]
    qs = [mt.tensor(p.numpy().copy(), requires_grad=True) for p in ps]
    rs = [mt.tensor(p.numpy().copy(), requires_grad=True) for p in ps]
    opt2, fresh = make(qs), make(rs)
    opt2.param_groups[0]["lr"] = 123.0                         # hyper-parameters come from the state dict
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for gs in grads[2:]:
        step(opt, ps, gs)
        step(opt2, qs, gs)
        step(fresh, rs, gs)
        for p, q in zip(ps, qs):
            np.testing.assert_array_equal(p.numpy(), q.numpy())
    # without the loaded state (momentum, moments, step count) the steps differ
    assert max(np.abs(p.numpy() - r.numpy()).max() for p, r in zip(ps, rs)) > 1e-6
    # the state dict is a copy: stepping on does not change it
    sd2 = opt.state_dict()
    before = {k: {n: (v.numpy().copy() if isinstance(v, mt.Tensor) else v) for n, v in st.items()}
              for k, st in sd2["state"].items()}
    step(opt, ps, grads[0])
    for k, st in sd2["state"].items():
        for n, v in st.items():
            if isinstance(v, mt.Tensor):
                np.testing.assert_array_equal(v.numpy(), before[k][n])


def test_optimizer_load_state_dict_mismatch():
    ps = [mt.tensor(np.zeros(s), requires_grad=True) for s in SHAPES]
    opt = Adam(ps, lr=0.1)
    for p in ps:
        p.grad = mt.tensor(np.ones(p.shape))
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="number of parameters"):
        Adam(ps[:2], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="parameter groups"):
        Adam([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.1).load_state_dict(sd)
    other = [mt.tensor(np.zeros((7,)), requires_grad=True)] + ps[1:]
    with pytest.raises(ValueError, match=r"shape.*\(3, 4\).*\(7,\)"):
        Adam(other, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="state"):
        Adam(ps, lr=0.1).load_state_dict({"param_groups": sd["param_groups"]})


def test_optim_does_not_import_nn():
    """Layering: the optimizers sit below the layers (nn may import optim, never the reverse)."""
    import ast
    import pathlib

    root = pathlib.Path(mt.__file__).parent / "optim"
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names
                          if n.startswith("..nn") or n.startswith("minitrans.nn")]
    assert offenders == []
