"""What the training scripts share beyond ``minitrans.train``: the command line, the held-out split,
the optimizer recipe, the loss, greedy-decoding accuracy, the run summary and plots."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numba
import numpy as np

import minitrans as mt
import minitrans.nn.functional as F
from minitrans.data import BOS, EOS, PAD, ReverseTask
from minitrans.train import Budget, Result, RunSetup, Trainer


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The script's docstring as written, and every option's default."""


def new_parser(doc: str) -> argparse.ArgumentParser:
    """The parser of a training script whose usage text is ``doc`` (its module docstring)."""
    return argparse.ArgumentParser(description=doc, formatter_class=_HelpFormatter)


def add_reverse_arguments(group) -> None:
    """The reversal task's options (sequence lengths, alphabet), for every model trained on it."""
    group.add_argument("--min-len", type=int, default=4, help="shortest sequence")
    group.add_argument("--max-len", type=int, default=16, help="longest sequence")
    group.add_argument("--symbols", type=int, default=17, help="distinct tokens (vocab = symbols + PAD/BOS/EOS)")


def reverse_task(args) -> ReverseTask:
    return ReverseTask(n_symbols=args.symbols, min_len=args.min_len, max_len=args.max_len)


def reverse_settings(task: ReverseTask) -> dict:
    """The task as the checkpoint records it."""
    return {"name": "reverse", "n_symbols": task.n_symbols, "min_len": task.min_len, "max_len": task.max_len,
            "pad": PAD, "bos": BOS, "eos": EOS}


def held_out_split(task, args):
    """(held_out, batch_fn): ``--eval-size`` examples drawn with seed 10000 + ``--seed`` (so every model
    trained on a task is scored on the same set), and training batches of ``--batch-size`` that never
    contain one of them."""
    held_out = task.sample(np.random.default_rng(10_000 + args.seed), args.eval_size)
    exclude = set(held_out)

    def batch_fn(rng):
        return task.batch(task.sample(rng, args.batch_size, exclude))

    return held_out, batch_fn


def seq2seq_loss_fn(device):
    """The Trainer's loss for an encoder–decoder on (src, tgt_in, tgt_out) batches: mean cross-entropy
    over the non-PAD targets, and their count."""
    def loss_fn(model, batch):
        src, tgt_in, tgt_out = batch
        logits = model(mt.tensor(src, device=device), mt.tensor(tgt_in, device=device))
        return seq_loss(logits, tgt_out, device, ignore_index=PAD), int((tgt_out != PAD).sum())

    return loss_fn


def greedy_accuracy(held_out, decode, want, chunk: int = 250) -> dict:
    """Exact-sequence (``seq_acc``) and token (``token_acc``) accuracy of greedy decoding.

    ``decode(examples)`` gives one row of predicted ids per example (at least as long as its answer),
    ``want(example)`` the ids it should have written; a row is cut to the answer's length.
    """
    exact = tok_ok = tok_n = 0
    for i in range(0, len(held_out), chunk):
        group = held_out[i:i + chunk]
        for example, row in zip(group, decode(group)):
            target = want(example)
            got = list(row[:len(target)])
            exact += got == target
            tok_ok += sum(a == b for a, b in zip(got, target))
            tok_n += len(target)
    return {"seq_acc": exact / len(held_out), "token_acc": tok_ok / tok_n}


def run_summary(task: str, res: Result, setup: RunSetup, n_params: int, token_key: str = "held_out_token_acc",
                **extra) -> dict:
    """What a training script returns and writes to summary.json: how the run ended, its held-out
    accuracies (the token one under ``token_key``) and ``extra`` facts about the model."""
    args = setup.args
    return {"task": task, **extra, "steps": res.step, "ended": res.ended, "target_met": res.target_met,
            "signal": res.signal, "elapsed_s": res.elapsed_s, "held_out_exact_match": res.metrics.get("seq_acc"),
            token_key: res.metrics.get("token_acc"), "parameters": n_params, "seed": args.seed,
            "device": str(args.device), "run_dir": setup.dir}


def write_summary(run_dir: str, info: dict) -> None:
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(info, f, indent=2)


def seq_loss(logits: mt.Tensor, target: np.ndarray, device="cpu", ignore_index: int = 0) -> mt.Tensor:
    """Mean cross-entropy over every (batch, time) position whose target is not ``ignore_index``."""
    B, T, V = logits.shape                                          # (batch, time, vocab)
    return F.cross_entropy(logits.reshape(B * T, V), mt.tensor(target.reshape(-1), device=device),
                           ignore_index=ignore_index)


def reversal_backward(model, opt, task: ReverseTask, rng, batch: int) -> mt.Tensor:
    """One batch of the fixed-length reversal study scripts (gradflow, scaling): ``batch`` sequences
    drawn with ``rng``, the per-token cross-entropy of ``model``'s output against their reversal,
    gradients zeroed and back-propagated; returns the loss (the optimizer step is the caller's)."""
    src = np.array(task.sample(rng, batch))
    logits = model(mt.tensor(src))
    loss = F.cross_entropy(logits.reshape(-1, task.vocab_size), mt.tensor(src[:, ::-1].reshape(-1)))
    opt.zero_grad()
    loss.backward()
    return loss


def fast_cpu_settings() -> None:
    """The process-wide CPU settings docs/performance.md measured for training, made explicitly: Numba's
    workqueue threading layer on several threads (omp on one), OpenBLAS on one thread (the CPU kernels
    split large products and attention tiles over minitrans's threads themselves), and freed
    temporaries kept for reuse. The layer is left alone once Numba's pool is running (it cannot
    change then)."""
    if mt.threading_layer() is None:
        mt.set_threading_layer("workqueue" if numba.config.NUMBA_NUM_THREADS > 1 else "omp")
    mt.threads.set_blas_num_threads(1)
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
