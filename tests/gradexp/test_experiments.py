"""Smoke runs of experiments/scaling.py and experiments/gradflow.py, and GradFlowMonitor against NumPy."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

import minitrans as mt
from minitrans import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
import gradflow  # noqa: E402
import scaling  # noqa: E402


def test_scaling_quick(tmp_path):
    res = scaling.main(["--quick", "--out", str(tmp_path)])
    for r in res["variance"]:                       # Var(q·k) = d, within 4 standard errors of the estimate
        assert abs(r["measured"] / r["d"] - 1) < 4 * r["rel_se"], r
    sat = res["saturation"]
    unscaled = [r["entropy_unscaled"] for r in sat]
    assert all(a > b for a, b in zip(unscaled, unscaled[1:]))           # no scale: sharper as d grows
    assert max(r["entropy_scaled"] for r in sat) - min(r["entropy_scaled"] for r in sat) < 0.3
    assert sat[-1]["max_weight_unscaled"] > 2 * sat[-1]["max_weight_scaled"]
    for r in res["gradients"]:
        assert all(r[k] > 0 and math.isfinite(r[k]) for k in r if k.startswith("d") and k != "d")
    assert {t["scale"] for t in res["training"]} == {"1/sqrt(d)", 1.0}
    for t in res["training"]:
        assert 0 <= t["final_acc"] <= 1 and t["curve"][-1]["step"] == 20
    if res["plots"]:
        assert {os.path.basename(p) for p in res["plots"]} == {"variance.png", "saturation.png", "gradients.png",
                                                                "training.png"}
    assert (tmp_path / "results.json").exists() and "| d |" in (tmp_path / "tables.md").read_text()


def test_gradflow_quick(tmp_path):
    res = gradflow.main(["--quick", "--out", str(tmp_path)])
    assert [r["label"] for r in res["runs"]] == ["pre-LN, warm-up 3", "pre-LN, no warm-up", "post-LN, warm-up 3",
                                                 "post-LN, no warm-up"]
    for r in res["runs"]:
        for key in ("grad_out", "grad_param", "update_ratio"):
            arr = np.array(r[key])
            assert arr.shape == (6, 3) and (arr > 0).all() and np.isfinite(arr).all()
    # with warm-up the first step is 1/3 of the peak learning rate: Adam's first update is ~lr·sign(g)
    wu, no = np.array(res["runs"][0]["update_ratio"]), np.array(res["runs"][1]["update_ratio"])
    np.testing.assert_allclose(wu[0], no[0] / 3, rtol=0.05)
    assert "post-LN, no warm-up" in res["table"]


def test_monitor_matches_numpy_gradients_and_sgd_updates():
    rng = np.random.default_rng(0)
    l1, l2 = nn.Linear(3, 4).double(), nn.Linear(4, 2).double()
    w1, b1, w2 = (rng.standard_normal(s) for s in ((4, 3), (4,), (2, 4)))
    l1.weight.data, l1.bias.data, l2.weight.data = mt.tensor(w1), mt.tensor(b1), mt.tensor(w2)
    x, g = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    mon = gradflow.GradFlowMonitor([l1, l2])
    opt = mt.optim.SGD(list(l1.parameters()) + list(l2.parameters()), lr=0.1)
    (l2(l1(mt.tensor(x))) * mt.tensor(g)).sum().backward()
    mon.before_step()
    opt.step()
    mon.after_step()
    assert mon.grad_out[0] == pytest.approx([np.linalg.norm(g @ w2), np.linalg.norm(g)], rel=1e-12)
    gw1 = (g @ w2).T @ x
    gb1 = (g @ w2).sum(0)
    assert mon.grad_param[0][0] == pytest.approx(math.sqrt((gw1 ** 2).sum() + (gb1 ** 2).sum()), rel=1e-12)
    w_norm = math.sqrt((w1 ** 2).sum() + (b1 ** 2).sum())
    assert mon.update_ratio[0][0] == pytest.approx(0.1 * mon.grad_param[0][0] / w_norm, rel=1e-9)
    mon.remove()
    (l2(l1(mt.tensor(x))) * mt.tensor(g)).sum().backward()
    assert mon._seen == [0.0, 0.0]                 # hooks are off
