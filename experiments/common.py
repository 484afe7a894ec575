"""What the training scripts share beyond ``minitrans.train``: the optimizer recipe, the loss, plots."""
from __future__ import annotations

import os
import sys

import numpy as np

import minitrans as mt
import minitrans.nn.functional as F
from minitrans.train import Budget, RunSetup, Trainer


def seq_loss(logits: mt.Tensor, target: np.ndarray, device="cpu", ignore_index: int = 0) -> mt.Tensor:
    """Mean cross-entropy over every (batch, time) position whose target is not ``ignore_index``."""
    B, T, V = logits.shape                                          # (batch, time, vocab)
    return F.cross_entropy(logits.reshape(B * T, V), mt.tensor(target.reshape(-1), device=device),
                           ignore_index=ignore_index)


def fast_cpu_settings() -> None:
    """The process-wide CPU settings docs/performance.md measured for training, made explicitly: Numba's
    workqueue threading layer on several threads (omp on one), and freed temporaries kept for reuse.
    The layer is left alone once Numba's pool is running (it cannot change then)."""
    import numba

    if mt.threading_layer() is None:
        mt.set_threading_layer("workqueue" if numba.config.NUMBA_NUM_THREADS > 1 else "omp")
    mt.backends.cpu.retain_freed_memory()


def make_trainer(setup: RunSetup, model, loss_fn, batch_fn, evaluate, task: dict, script: str,
                 metric_names=("seq_acc", "token_acc")) -> Trainer:
    """Adam (β2 0.98) + linear warm-up then 1/√step decay + clipping at 1, resumed when --resume was given."""
    fast_cpu_settings()
    args = setup.args
    opt = mt.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)
    sched = mt.optim.lr_scheduler.WarmupInverseSqrtLR(opt, warmup_steps=args.warmup)
    meta = {"task": task, "args": {k: v for k, v in vars(args).items()}}
    trainer = Trainer(model, opt, loss_fn, batch_fn, evaluate, setup.dir,
                      Budget(max_steps=args.steps, time_limit=args.time_limit, target=args.target),
                      data_rng=np.random.default_rng(args.seed), scheduler=sched, metric_names=metric_names,
                      eval_every=args.eval_every, log_every=args.log_every, meta=meta, progress=not args.quiet,
                      resume_command=f"python {script}")
    if setup.checkpoint is not None:
        trainer.restore(setup.checkpoint)
    for note in setup.notes:
        print(note)
    return trainer


_WARNED = []


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _WARNED:
            print("plots skipped: matplotlib is not installed (python -m pip install matplotlib, "
                  "or python -m pip install -e '.[plot]')", file=sys.stderr)
            _WARNED.append(True)
        return None
    return plt


def try_plots(run_dir: str, rows: list[dict], title: str, attention: np.ndarray | None = None,
              xlabels=None, ylabels=None, attention_title: str = "", caption: str = "") -> list[str]:
    """loss.png (training loss and held-out exact match per step) and attention.png with its caption."""
    plt = _pyplot()
    if plt is None:
        return []
    made = []
    logged = [r for r in rows if r.get("train_loss") not in (None, "")]
    evals = [r for r in rows if r.get("seq_acc") not in (None, "")]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([r["step"] for r in logged], [r["train_loss"] for r in logged], lw=1, label="training loss")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (cross-entropy per token, log scale)")
    ax2 = ax.twinx()
    ax2.plot([r["step"] for r in evals], [r["seq_acc"] for r in evals], "o-", color="tab:green", ms=3,
             label="held-out exact match")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("held-out exact match (fraction)")
    ax.set_title(f"{title}: training loss and held-out accuracy")
    fig.legend(loc="center right")
    fig.tight_layout()
    made.append(os.path.join(run_dir, "loss.png"))
    fig.savefig(made[-1], dpi=100)
    plt.close(fig)
    if attention is not None:
        fig, ax = plt.subplots(figsize=(6.5, 5.8))
        im = ax.imshow(attention, cmap="viridis", aspect="auto", vmin=0)
        fig.colorbar(im, ax=ax, label="attention weight")
        if xlabels is not None:
            ax.set_xticks(range(len(xlabels)), xlabels, fontsize=7)
        if ylabels is not None:
            ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
        ax.set_xlabel("key position (what is attended to)")
        ax.set_ylabel("query position (who attends)")
        ax.set_title(attention_title, fontsize=10)
        fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        made.append(os.path.join(run_dir, "attention.png"))
        fig.savefig(made[-1], dpi=100)
        plt.close(fig)
    return made
