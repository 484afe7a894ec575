"""The shared training loop: stop reasons, safe interruption, exact resume, run directories, reuse.

A tiny regression model keeps these fast; the same loop drives experiments/reverse.py and
addition.py (tests/test_examples.py runs those end to end).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
from minitrans.train import Budget, RunError, Trainer, add_arguments, start_run

W_TRUE = np.random.default_rng(123).standard_normal((5, 3)).astype(np.float32)


class Hooks:
    """batch_fn / loss_fn / evaluate for y = x @ W_TRUE, with optional actions at a given step."""

    def __init__(self, at_step=None, action=None, sleep=0.0):
        self.calls, self.at_step, self.action, self.sleep = 0, at_step, action, sleep

    def batch_fn(self, rng):
        self.calls += 1
        if self.at_step is not None and self.calls == self.at_step:
            self.action()
        if self.sleep:
            time.sleep(self.sleep)
        x = rng.standard_normal((8, 5)).astype(np.float32)
        return x, x @ W_TRUE

    @staticmethod
    def loss_fn(model, batch):
        x, y = batch
        return (model(mt.tensor(x)) - mt.tensor(y)).pow(2).mean(), len(x)

    @staticmethod
    def evaluate(model):
        x = np.random.default_rng(7).standard_normal((32, 5)).astype(np.float32)
        err = float(((model(mt.tensor(x)).numpy() - x @ W_TRUE) ** 2).mean())
        return {"seq_acc": 1.0 / (1.0 + err), "token_acc": 0.0}


def make(run_dir, hooks, budget, seed=0):
    mt.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))   # dropout: the RNG matters
    opt = mt.optim.Adam(model.parameters(), lr=1e-2)
    sched = mt.optim.lr_scheduler.WarmupInverseSqrtLR(opt, warmup_steps=5)
    return Trainer(model, opt, hooks.loss_fn, hooks.batch_fn, hooks.evaluate, str(run_dir), budget,
                   data_rng=np.random.default_rng(seed), scheduler=sched, eval_every=10, log_every=5,
                   progress=False, resume_command="python train.py")


def params(trainer):
    return [p.numpy().copy() for p in trainer.model.parameters()]


def test_sigint_mid_run_then_resume_is_bit_identical(tmp_path):
    ref = make(tmp_path / "ref", Hooks(), Budget(40))
    r = ref.fit()
    assert r.ended == "steps" and r.step == 40

    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)     # SIG_IGN when the suite runs as a background job
    first = make(run, Hooks(at_step=17, action=lambda: os.kill(os.getpid(), signal.SIGINT)), Budget(40))
    r1 = first.fit()                         # the signal lands during step 17: that step finishes, then a checkpoint
    assert r1.ended == "interrupted" and r1.step == 17 and r1.signal == signal.SIGINT
    assert "resume with: python train.py --resume --out-dir" in r1.message
    ck = mt.load(os.path.join(run, "checkpoint.npz"))
    assert int(ck["step"]) == 17
    assert signal.getsignal(signal.SIGINT) == before                        # the caller's handler is back

    second = make(run, Hooks(), Budget(40), seed=99)      # a different init: everything must come from the file
    second.restore(ck)
    r2 = second.fit()
    assert r2.ended == "steps" and r2.step == 40
    for a, b in zip(params(ref), params(second)):
        np.testing.assert_array_equal(a, b)
    assert [row["train_loss"] for row in r2.rows] == [row["train_loss"] for row in r.rows]


def test_sigterm_is_handled_like_sigint(tmp_path):
    t = make(tmp_path, Hooks(at_step=3, action=lambda: os.kill(os.getpid(), signal.SIGTERM)), Budget(20))
    r = t.fit()
    assert r.ended == "interrupted" and r.step == 3 and r.signal == signal.SIGTERM
    assert os.path.exists(os.path.join(tmp_path, "checkpoint.npz"))


def test_time_limit_stop_then_resume_continues(tmp_path):
    t = make(tmp_path, Hooks(sleep=0.02), Budget(200, time_limit=0.15))
    r = t.fit()
    assert r.ended == "time" and 0 < r.step < 200
    assert "time limit" in r.message and "WARNING" not in r.message       # no target was set
    stopped_at = r.step
    ck = mt.load(os.path.join(tmp_path, "checkpoint.npz"))
    assert int(ck["step"]) == stopped_at

    t2 = make(tmp_path, Hooks(), Budget(stopped_at + 12))                 # a fresh session: a new allowance
    t2.restore(ck)
    r2 = t2.fit()
    assert r2.ended == "steps" and r2.step == stopped_at + 12


def test_missed_target_is_a_warning_and_met_target_stops(tmp_path):
    r = make(tmp_path / "a", Hooks(), Budget(20, target=2.0)).fit()        # seq_acc <= 1 can never reach 2
    assert r.ended == "steps" and not r.target_met
    assert "WARNING: the target 2.0 was NOT reached" in r.message
    r = make(tmp_path / "b", Hooks(), Budget(500, target=0.0)).fit()
    assert r.ended == "target" and r.target_met and r.step == 10          # the first evaluation


def test_resume_with_a_different_config_names_the_field(tmp_path):
    from minitrans.models import Seq2Seq, Seq2SeqConfig

    small = Seq2Seq(Seq2SeqConfig(vocab_size=12, d_model=16, nhead=2, num_layers=1, dim_feedforward=32))
    opt = mt.optim.Adam(small.parameters())
    t = Trainer(small, opt, None, None, None, str(tmp_path), Budget(5), data_rng=np.random.default_rng(0))
    os.makedirs(tmp_path, exist_ok=True)
    t.save(0.0)
    big = Seq2Seq(Seq2SeqConfig(vocab_size=12, d_model=32, nhead=2, num_layers=1, dim_feedforward=32))
    t2 = Trainer(big, mt.optim.Adam(big.parameters()), None, None, None, str(tmp_path), Budget(5),
                 data_rng=np.random.default_rng(0))
    with pytest.raises(RunError, match="expected d_model 32, checkpoint has 16"):
        t2.restore(mt.load(os.path.join(tmp_path, "checkpoint.npz")))


def _parser():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p, steps=10, batch_size=4, lr=1e-3, warmup=1, eval_every=5, eval_size=4, target=0.5)
    return p


def test_no_silent_overwrite_and_resume_errors(tmp_path):
    base = str(tmp_path / "runs" / "toy")
    s1 = start_run(_parser(), ["--out-dir", base], "toy")
    assert s1.dir == base
    make(s1.dir, Hooks(), Budget(5)).fit()
    s2 = start_run(_parser(), ["--out-dir", base], "toy")                  # a second run: a new directory
    assert s2.dir == base + "-2" and any("holds an earlier run" in n for n in s2.notes)
    s3 = start_run(_parser(), ["--out-dir", base, "--overwrite"], "toy")
    assert s3.dir == base and not os.path.exists(base)                    # removed, and said so
    assert any("--overwrite" in n for n in s3.notes)
    with pytest.raises(RunError, match="no checkpoint at"):
        start_run(_parser(), ["--out-dir", str(tmp_path / "nothing"), "--resume"], "toy")
    with pytest.raises(RunError, match="give one of them"):
        start_run(_parser(), ["--resume", "--overwrite"], "toy")


def test_loading_a_checkpoint_for_inference_without_the_training_script(tmp_path):
    """A fresh interpreter, no experiments/ on sys.path: one call rebuilds the trained model."""
    from minitrans.models import Seq2Seq, Seq2SeqConfig
    from minitrans.models.checkpoint import save_model

    mt.manual_seed(3)
    cfg = Seq2SeqConfig(vocab_size=12, d_model=16, nhead=2, num_layers=1, dim_feedforward=32)
    model = Seq2Seq(cfg).eval()
    src = np.array([[3, 4, 5, 6]])
    tgt = np.array([[1, 6, 5]])
    want = model(mt.tensor(src), mt.tensor(tgt)).numpy()
    path = str(tmp_path / "model.npz")
    save_model(model, path, task={"name": "toy"})
    code = ("import sys, numpy as np, minitrans as mt\n"
            "assert not any('experiments' in p for p in sys.path)\n"
            f"m = mt.models.from_checkpoint({path!r})\n"
            "out = m(mt.tensor(np.array([[3, 4, 5, 6]])), mt.tensor(np.array([[1, 6, 5]]))).numpy()\n"
            "np.save(sys.argv[1], out)\n")
    out_file = str(tmp_path / "out.npy")
    subprocess.run([sys.executable, "-c", code, out_file], check=True, cwd=tmp_path, timeout=120,
                   stdin=subprocess.DEVNULL)
    np.testing.assert_array_equal(np.load(out_file), want)
