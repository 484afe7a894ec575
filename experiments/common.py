"""Shared plumbing for the training experiments: run directory, metrics, checkpoints, plots."""
from __future__ import annotations

import csv
import json
import os
import time

import numpy as np

import minitrans as mt


class Run:
    """A run directory holding metrics.csv, summary.json, checkpoint.npz and (optionally) PNG plots."""

    def __init__(self, out_dir: str) -> None:
        self.dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.metrics_path = os.path.join(out_dir, "metrics.csv")
        self.ckpt_path = os.path.join(out_dir, "checkpoint.npz")
        self.rows: list[dict] = []

    def log(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.metrics_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.rows[0].keys()))
            w.writeheader()
            w.writerows(self.rows)

    def summary(self, info: dict) -> None:
        with open(os.path.join(self.dir, "summary.json"), "w") as f:
            json.dump(info, f, indent=2)

    def save(self, model, opt, sched, step: int, data_rng: np.random.Generator, extra: dict) -> None:
        mt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "step": step, "data_rng": json.dumps(data_rng.bit_generator.state),
                 "rng": json.dumps(mt.get_rng_state()), "metrics": json.dumps(self.rows), "extra": json.dumps(extra)},
                self.ckpt_path)

    def resume(self, model, opt, sched, data_rng: np.random.Generator) -> tuple[int, dict]:
        ck = mt.load(self.ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        data_rng.bit_generator.state = json.loads(ck["data_rng"])
        mt.set_rng_state(json.loads(ck["rng"]))
        self.rows = json.loads(ck["metrics"])
        return int(ck["step"]), json.loads(ck["extra"])


class Timer:
    def __init__(self, offset: float = 0.0) -> None:
        self.t0 = time.perf_counter() - offset

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def try_plots(run: Run, attention: np.ndarray | None, xlabels=None, ylabels=None, title: str = "",
              attention_title: str = "cross-attention, last decoder layer (head mean)") -> list[str]:
    """Loss curve and attention heat map as PNG when matplotlib is installed (the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    steps = [r["step"] for r in run.rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [r["train_loss"] for r in run.rows], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["seq_acc"] for r in run.rows], color="tab:green", label="held-out exact match")
    ax2.set_ylim(0, 1)
    ax.set_title(title)
    fig.legend(loc="center right")
    fig.tight_layout()
    p = os.path.join(run.dir, "loss.png")
    fig.savefig(p, dpi=100)
    plt.close(fig)
    made.append(p)
    if attention is not None:
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.imshow(attention, cmap="viridis", aspect="auto")
        if xlabels is not None:
            ax.set_xticks(range(len(xlabels)), xlabels, fontsize=7)
        if ylabels is not None:
            ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        ax.set_title(attention_title)
        fig.tight_layout()
        p = os.path.join(run.dir, "attention.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        made.append(p)
    return made


def add_training_args(p, steps: int, batch_size: int, lr: float, warmup: int, eval_every: int, eval_size: int,
                      target: float, time_limit: float) -> None:
    """The arguments every training experiment shares."""
    p.add_argument("--steps", type=int, default=steps, help="maximum optimizer steps")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (after warm-up)")
    p.add_argument("--warmup", type=int, default=warmup, help="linear warm-up steps, then 1/sqrt(step) decay")
    p.add_argument("--eval-every", type=int, default=eval_every)
    p.add_argument("--eval-size", type=int, default=eval_size, help="held-out examples")
    p.add_argument("--target", type=float, default=target, help="stop once held-out exact match reaches this")
    p.add_argument("--time-limit", type=float, default=time_limit, help="stop training after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def train(args, run: Run, model, batch_fn, loss_of, evaluate, data_rng: np.random.Generator) -> dict:
    """Adam + warm-up/inverse-sqrt schedule + clipping, tqdm progress, periodic held-out evaluation,
    a checkpoint at every evaluation, early stop at ``args.target``. Returns the last metrics row."""
    import sys

    from tqdm import tqdm

    opt = mt.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)
    sched = mt.optim.lr_scheduler.WarmupInverseSqrtLR(opt, warmup_steps=args.warmup)
    step, extra = 0, {"elapsed": 0.0}
    if args.resume:
        step, extra = run.resume(model, opt, sched, data_rng)
        print(f"resumed from {run.ckpt_path} at step {step}")
    clock = Timer(extra["elapsed"])
    window_t, window_tok, losses = clock(), 0, []
    row = run.rows[-1] if run.rows else {"seq_acc": float("nan"), "token_acc": float("nan")}
    bar = tqdm(total=args.steps, initial=step, disable=args.quiet, file=sys.stdout, dynamic_ncols=True)

    def checkpoint():
        nonlocal row
        seq_acc, tok_acc = evaluate(model)
        row = {"step": step, "elapsed_s": round(clock(), 2), "train_loss": float(np.mean(losses[-50:] or [np.nan])),
               "seq_acc": seq_acc, "token_acc": tok_acc, "lr": sched.get_last_lr()[0]}
        run.log(row)
        run.save(model, opt, sched, step, data_rng, {"elapsed": clock()})
        tqdm.write(f"step {step:5d}  loss {row['train_loss']:.4f}  held-out exact {seq_acc:.3f}  "
                   f"token {tok_acc:.3f}  ({clock():.0f}s)", file=sys.stdout)

    while step < args.steps and clock() < args.time_limit:
        batch = batch_fn(data_rng)
        loss, n_tok = loss_of(model, batch)
        opt.zero_grad()
        loss.backward()
        mt.optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        window_tok += n_tok
        losses.append(loss.item())
        if step % 25 == 0:
            dt = clock() - window_t
            bar.set_postfix(loss=f"{np.mean(losses[-25:]):.3f}", acc=f"{row['seq_acc']:.3f}",
                            tok_s=f"{window_tok / max(dt, 1e-9):,.0f}")
            window_t, window_tok = clock(), 0
        bar.update(1)
        if step % args.eval_every == 0:
            model.eval()
            checkpoint()
            model.train()
            if row["seq_acc"] >= args.target:
                break
    bar.close()
    if row.get("step") != step:
        model.eval()
        checkpoint()
        model.train()
    row["elapsed_s"] = round(clock(), 2)
    return row
