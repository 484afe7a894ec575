"""Train a decoder-only (causal) transformer to add: "123+456=" → "579".

    python experiments/addition.py            # stops at >= 97% held-out exact match (or 12000 steps)
    python experiments/addition.py --resume   # continue the newest runs/addition* from its checkpoint

The run ends at the first of: the target (checked every --eval-every steps), the step budget,
the optional --time-limit; its last line says which, and warns when the target was missed.
Ctrl-C finishes the current step, writes a checkpoint and prints the command that resumes.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import minitrans as mt
from minitrans.data import EOS, AdditionTask
from minitrans.models import GPT, GPTConfig
from minitrans.train import add_arguments, cli, start_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (greedy_accuracy, held_out_split, make_trainer, new_parser, run_summary, seq_loss,  # noqa: E402
                    try_plots, write_summary)


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    add_arguments(p, steps=12000, batch_size=64, lr=1e-3, warmup=300, eval_every=250, eval_size=500, target=0.97)
    m = p.add_argument_group("model and task")
    m.add_argument("--digits", type=int, default=3, help="operands have up to this many digits")
    m.add_argument("--d-model", type=int, default=128, help="embedding width")
    m.add_argument("--heads", type=int, default=4, help="attention heads")
    m.add_argument("--layers", type=int, default=2, help="transformer blocks")
    m.add_argument("--ff", type=int, default=512, help="feed-forward width")
    return p


def evaluate(model: GPT, task: AdditionTask, held_out, device) -> dict:
    """Exact-match and digit accuracy of greedy decoding of the answer on held-out problems."""
    def decode(group):
        prompt = np.array([task.prompt(a, b) for a, b in group], np.int64)   # all prompts share a length
        return model.greedy(prompt, task.n_digits + 2, device)

    return greedy_accuracy(held_out, decode, lambda ab: task.encode(str(sum(ab))) + [EOS])


def main(argv=None) -> dict:
    setup = start_run(build_parser(), argv, "addition")
    args = setup.args
    mt.manual_seed(args.seed)
    task = AdditionTask(n_digits=args.digits)
    held_out, batch_fn = held_out_split(task, args)      # training never sees a held-out problem
    cfg = GPTConfig(vocab_size=task.vocab_size, block_size=task.seq_len + 1, n_layer=args.layers,
                    n_head=args.heads, n_embd=args.d_model, n_ff=args.ff)
    model = GPT(cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"addition: {n_params:,} parameters, up to {args.digits}-digit operands, device {args.device}, "
          f"run directory {setup.dir}")

    def loss_fn(model, batch):
        x, y = batch
        logits = model(mt.tensor(x, device=args.device))
        return seq_loss(logits, y, args.device, ignore_index=-100), int((y >= 0).sum())

    settings = {"name": "addition", "n_digits": task.n_digits}
    trainer = make_trainer(setup, model, loss_fn, batch_fn, lambda m: evaluate(m, task, held_out, args.device),
                           settings, "experiments/addition.py")
    res = trainer.fit()
    info = run_summary("addition", res, setup, n_params, token_key="held_out_digit_acc")
    if res.ended != "interrupted":                # an interrupted run leaves fast: plots come with the resumed one
        a, b = held_out[0]
        pred = model.greedy(np.array([task.prompt(a, b)], np.int64), task.n_digits + 2, args.device)[0]
        x, _ = task.batch([(a, b)])
        L = len(task.prompt(a, b)) + len(str(a + b)) + 1                    # prompt, answer, EOS
        attn = model.self_attention_map(mt.tensor(x[:, :L], device=args.device))[0]
        labels = ["<bos>"] + list(task.decode(x[0, 1:L])) + ["<eos>"]
        info["plots"] = try_plots(
            setup.dir, res.rows, "addition", attn, xlabels=labels[:L], ylabels=labels[:L],
            attention_title="causal self-attention, last block (mean of heads), one held-out problem",
            caption="Rows after '=' show which prompt tokens each answer digit reads; column-wise addition would "
                    "put the weight on the operand digits of that digit's place.")
        shown = task.decode(pred[: list(pred).index(EOS)] if EOS in pred else pred)
        a, b = f"{a:0{args.digits}d}", f"{b:0{args.digits}d}"
        info["example"] = f"{a}+{b}={shown}"
        print(f"example: {a}+{b}={shown}   (true {int(a) + int(b)})")
        write_summary(setup.dir, info)
    print(res.message)
    return info


if __name__ == "__main__":
    sys.exit(cli(main))
