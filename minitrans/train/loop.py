"""The training loop every experiment shares: explicit stop conditions, safe interruption, exact resume.

A run ends for exactly one of four reasons, and ``Result.message`` (the line a script prints
last) names it: ``target`` (the held-out metric reached the target at an evaluation),
``steps`` (the step budget is used up), ``time`` (this invocation's time limit passed) or
``interrupted`` (SIGINT/SIGTERM: the current step finishes, a checkpoint is written, and the
message gives the resume command). A run that stops without reaching its target says so
with a plain ``WARNING``.

The checkpoint holds everything the next step depends on (weights, optimizer and scheduler
state, the data generator, the global RNG, the metrics so far and the losses not yet
logged), so an interrupted run resumed finishes bit-identically to an uninterrupted one.

Seams for data-parallel training (one process per rank): ``is_main`` (only the main rank
writes checkpoints and metrics and shows progress), ``shard_batch`` (every rank draws the same
global batch from the same data generator and keeps its share, so the batch the user asked
for is the global batch and checkpoints do not depend on the number of ranks),
``reduce_loss`` (average the logged loss over ranks) and ``sync_stop`` (agree on the stop
decision, e.g. an all-reduce MAX of the reason code, so every rank stops at the same step).
When a ``minitrans.distributed`` process group is initialised, the seams not given default to
its ``trainer_seams()`` (rank 0 is the main rank), so a script needs no change beyond wrapping
its model in ``DistributedDataParallel``.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .. import serialization
from ..distributed import trainer_seams
from ..models.checkpoint import check_config, describe
from ..optim import clip_grad_norm_
from ..random import get_rng_state, set_rng_state

STOP_CODES = {None: 0, "time": 1, "interrupted": 2}          # what sync_stop exchanges between ranks
CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.csv"


class RunError(Exception):
    """A run cannot start or resume; the message is one line meant for the user."""


@dataclass
class Budget:
    max_steps: int                      # total optimizer steps over every session of the run
    time_limit: float | None = None     # seconds of training in this invocation (each resume gets its own)
    target: float | None = None         # stop once the evaluated ``metric`` is >= this
    metric: str = "seq_acc"             # the key of evaluate()'s dict that ``target`` applies to
    metric_label: str = "held-out exact match"


@dataclass
class Result:
    step: int
    ended: str                          # "target" | "steps" | "time" | "interrupted"
    elapsed_s: float                    # training time over every session
    metrics: dict                       # the last evaluation
    target_met: bool
    message: str                        # the line to print last
    signal: int | None = None
    rows: list = field(default_factory=list)


def _spec(model) -> dict:
    """The model's class and config when it is a registered model (so the checkpoint rebuilds it), else {}."""
    try:
        return describe(model)
    except TypeError:
        return {}        # any Module trains; only registered ones can be rebuilt by from_checkpoint


class Trainer:
    """Adam-style loop: ``loss_fn(model, batch) -> (loss, n_tokens)``; ``evaluate(model) -> {name: value}``."""

    def __init__(self, model, optimizer, loss_fn: Callable, batch_fn: Callable[[np.random.Generator], Any],
                 evaluate: Callable[[Any], dict], run_dir: str, budget: Budget, *, data_rng: np.random.Generator,
                 scheduler=None, metric_names: Sequence[str] = ("seq_acc", "token_acc"), eval_every: int = 250,
                 log_every: int = 10, clip_grad_norm: float | None = 1.0, meta: dict | None = None,
                 progress: bool = True, resume_command: str = "", is_main: bool | None = None,
                 shard_batch: Callable | None = None, reduce_loss: Callable[[float], float] | None = None,
                 sync_stop: Callable[[int], int] | None = None) -> None:
        if budget.max_steps < 1:
            raise RunError(f"the step budget must be at least 1, got {budget.max_steps}")
        if eval_every < 1 or log_every < 1:
            raise RunError(f"eval_every and log_every must be at least 1, got {eval_every} and {log_every}")
        self.model, self.opt, self.sched = model, optimizer, scheduler
        self.loss_fn, self.batch_fn, self.evaluate = loss_fn, batch_fn, evaluate
        self.dir, self.budget, self.data_rng = run_dir, budget, data_rng
        self.metric_names = list(metric_names)
        self.eval_every, self.log_every, self.clip = eval_every, log_every, clip_grad_norm
        self.meta, self.progress, self.resume_command = dict(meta or {}), progress, resume_command
        seams = trainer_seams()                   # {} unless a process group is initialised
        is_main = seams.get("is_main", True) if is_main is None else is_main
        shard_batch, reduce_loss = shard_batch or seams.get("shard_batch"), reduce_loss or seams.get("reduce_loss")
        sync_stop = sync_stop or seams.get("sync_stop")
        self.is_main, self.shard_batch = is_main, shard_batch or (lambda b: b)
        self.reduce_loss, self.sync_stop = reduce_loss or (lambda x: x), sync_stop or (lambda c: c)
        self.step, self.elapsed_before, self.sessions = 0, 0.0, 1
        self.rows: list[dict] = []
        self.pending: list[float] = []            # losses since the last logged row
        self.last_eval: dict = {}
        self._signal: int | None = None

    # ------------------------------------------------------------------ paths and checkpoints
    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dir, CHECKPOINT)

    def _raw_model(self):
        return getattr(self.model, "module", self.model)     # a data-parallel wrapper keeps the model in .module

    def state(self, elapsed: float) -> dict:
        m = self._raw_model()
        return {"model": m.state_dict(), "model_spec": _spec(m), "task": self.meta.get("task", {}),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched is not None else {},
                "step": self.step, "elapsed": elapsed, "sessions": self.sessions,
                "data_rng": json.dumps(self.data_rng.bit_generator.state), "rng": json.dumps(get_rng_state()),
                "rows": json.dumps(self.rows), "pending": json.dumps(self.pending),
                "last_eval": json.dumps(self.last_eval), "meta": json.dumps(self.meta)}

    def save(self, elapsed: float) -> None:
        if self.is_main:
            serialization.save(self.state(elapsed), self.ckpt_path)      # temp file + fsync + rename

    def restore(self, ck: dict) -> None:
        """Continue from a checkpoint dict (``mt.load``): the model config must match the one built here."""
        mine, saved = _spec(self._raw_model()), ck.get("model_spec") or {}
        if mine.get("class") != saved.get("class"):
            have = saved.get("class", "model of no registered class")
            built = mine.get("class", type(self._raw_model()).__name__)
            raise RunError(f"--resume {self.dir}: the checkpoint holds a {have}, this run built a {built}")
        try:
            if mine:
                check_config(mine["config"], saved["config"])
        except ValueError as e:
            raise RunError(f"--resume {self.dir}: {e}") from None
        self._raw_model().load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(ck["scheduler"])
        self.data_rng.bit_generator.state = json.loads(ck["data_rng"])
        set_rng_state(json.loads(ck["rng"]))
        self.step, self.elapsed_before = int(ck["step"]), float(ck["elapsed"])
        self.sessions = int(ck["sessions"]) + 1
        self.rows, self.pending = json.loads(ck["rows"]), json.loads(ck["pending"])
        self.last_eval = json.loads(ck["last_eval"])

    # ------------------------------------------------------------------ metrics
    def _columns(self) -> list[str]:
        return ["step", "elapsed_s", "train_loss", "lr"] + self.metric_names

    def _rewrite_metrics(self) -> None:
        if not self.is_main:
            return
        with open(os.path.join(self.dir, METRICS), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._columns(), restval="", extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def _append_row(self, row: dict) -> None:
        self.rows.append(row)
        if self.is_main:
            with open(os.path.join(self.dir, METRICS), "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns(), restval="", extrasaction="ignore").writerow(row)

    def _log_row(self, clock: float) -> dict:
        loss = float(np.mean(self.pending)) if self.pending else None
        self.pending = []
        lr = self.sched.get_last_lr()[0] if self.sched is not None else self.opt.param_groups[0]["lr"]
        return {"step": self.step, "elapsed_s": round(clock, 2), "train_loss": loss, "lr": lr}

    def _evaluate(self, clock: float, bar) -> None:
        model = self.model
        model.eval()
        try:
            res = {k: float(v) for k, v in self.evaluate(self._raw_model()).items()}
        finally:
            model.train()
        missing = [k for k in self.metric_names if k not in res]
        if missing:
            raise RunError(f"evaluate() returned {sorted(res)}, missing {missing}")
        self.last_eval = res
        if self.rows and self.rows[-1]["step"] == self.step:     # the step was logged already: add to its row
            self.rows[-1].update(res)
            self._rewrite_metrics()
        else:
            self._append_row({**self._log_row(clock), **res})
        self.save(clock)
        if self.is_main:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in res.items())
            loss = self.rows[-1].get("train_loss")
            bar.write(f"step {self.step:5d}  loss {'-' if loss is None else f'{loss:.4f}'}  {shown}  "
                      f"({clock:.0f} s)", file=sys.stdout)

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt                        # a second Ctrl-C: stop at once, no checkpoint
        self._signal = signum
        if self.is_main:
            print(f"\n{signal.Signals(signum).name} received: finishing step {self.step + 1}, then writing a "
                  f"checkpoint (Ctrl-C again to quit without one)", file=sys.stderr, flush=True)

    def _install_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Result:
        from tqdm import tqdm     # an optional dependency: imported only when a run starts

        b = self.budget
        if self.step >= b.max_steps:
            raise RunError(f"{self.dir} has used its whole step budget ({self.step} of {b.max_steps} steps); "
                           f"pass a larger --steps to continue")
        if self.is_main:
            os.makedirs(self.dir, exist_ok=True)
            self._rewrite_metrics()                        # drops rows logged after the checkpoint, if any
        t0 = time.perf_counter()
        clock = lambda: self.elapsed_before + time.perf_counter() - t0      # noqa: E731
        session = lambda: time.perf_counter() - t0                          # noqa: E731
        bar = tqdm(total=b.max_steps, initial=self.step, disable=not (self.progress and self.is_main),
                   file=sys.stdout, dynamic_ncols=True)
        previous = self._install_handlers()
        ended, self._signal = None, None
        try:
            while True:
                if self.step >= b.max_steps:
                    ended = "steps"
                    break
                local = "interrupted" if self._signal is not None else \
                    "time" if b.time_limit is not None and session() >= b.time_limit else None
                code = self.sync_stop(STOP_CODES[local])
                if code:
                    ended = {v: k for k, v in STOP_CODES.items()}[code]
                    break
                batch = self.shard_batch(self.batch_fn(self.data_rng))
                loss, n_tok = self.loss_fn(self.model, batch)
                self.opt.zero_grad()
                loss.backward()
                if self.clip is not None:
                    clip_grad_norm_(self.model.parameters(), self.clip)
                self.opt.step()
                if self.sched is not None:
                    self.sched.step()
                self.step += 1
                self.pending.append(self.reduce_loss(loss.item()))
                bar.update(1)
                if self.step % self.log_every == 0:
                    self._append_row(self._log_row(clock()))
                    bar.set_postfix(loss=f"{self.rows[-1]['train_loss']:.3f}",
                                    **{b.metric: f"{self.last_eval.get(b.metric, float('nan')):.3f}"})
                if self.step % self.eval_every == 0:
                    self._evaluate(clock(), bar)
                    if b.target is not None and self.last_eval[b.metric] >= b.target:
                        ended = "target"
                        break
            if ended == "interrupted":
                self.save(clock())
            elif ended in ("steps", "time") and (not self.rows or self.rows[-1]["step"] != self.step
                                                 or b.metric not in self.rows[-1]):
                self._evaluate(clock(), bar)
                if b.target is not None and self.last_eval[b.metric] >= b.target:
                    ended = "target"
        finally:
            bar.close()
            for s, h in previous.items():
                signal.signal(s, h)
        return self._result(ended, clock())

    def _result(self, ended: str, elapsed: float) -> Result:
        b, value = self.budget, self.last_eval.get(self.budget.metric)
        met = b.target is not None and value is not None and value >= b.target
        shown = f"{b.metric_label} {value:.4f}" if value is not None else f"{b.metric_label} not evaluated yet"
        resume = f"{self.resume_command} --resume --out-dir {self.dir}".strip()
        if ended == "interrupted":
            name = signal.Signals(self._signal).name
            msg = (f"interrupted by {name} at step {self.step} of {b.max_steps}: checkpoint written to "
                   f"{self.ckpt_path}; resume with: {resume}")
        elif ended == "target":
            msg = (f"done: target reached ({shown} >= {b.target}) at step {self.step}, "
                   f"{elapsed:.0f} s of training; checkpoint {self.ckpt_path}")
        else:
            why = (f"step budget used up ({self.step} steps)" if ended == "steps"
                   else f"time limit of {b.time_limit:g} s reached at step {self.step} of {b.max_steps}")
            msg = f"stopped: {why}, {elapsed:.0f} s of training; {shown}"
            if b.target is not None and not met:
                more = f" --steps {2 * b.max_steps}" if ended == "steps" else ""
                msg += f". WARNING: the target {b.target} was NOT reached; to train on: {resume}{more}"
        return Result(step=self.step, ended=ended, elapsed_s=round(elapsed, 2), metrics=dict(self.last_eval),
                      target_met=met, message=msg, signal=self._signal, rows=list(self.rows))
