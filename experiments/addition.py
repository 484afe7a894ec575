"""Train a decoder-only (causal) transformer to add: "123+456=" → "579".

    python experiments/addition.py            # default: ≥ 95% held-out exact match
    python experiments/addition.py --resume   # continue from runs/addition/checkpoint.npz
"""
from __future__ import annotations

import argparse

import numpy as np

import minitrans as mt
from minitrans.data import EOS, AdditionTask

from common import Run, add_training_args, train, try_plots
from minitrans.models import GPT, GPTConfig
from seq2seq import loss_fn


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, steps=6000, batch_size=64, lr=1e-3, warmup=300, eval_every=250, eval_size=500,
                      target=0.97, time_limit=560.0)
    p.add_argument("--digits", type=int, default=3, help="operands have up to this many digits")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--ff", type=int, default=512)
    return p.parse_args(argv)


def evaluate(model: GPT, task: AdditionTask, held_out, device) -> tuple[float, float]:
    """(exact-match accuracy, digit accuracy) of greedy decoding of the answer on held-out problems."""
    exact = ok = n = 0
    for i in range(0, len(held_out), 250):
        group = held_out[i:i + 250]
        prompt = np.array([task.prompt(a, b) for a, b in group], np.int64)   # all prompts share a length
        pred = model.greedy(prompt, task.n_digits + 2, device)
        for (a, b), row in zip(group, pred):
            want = task.encode(str(a + b)) + [EOS]
            got = list(row[:len(want)])
            exact += got == want
            ok += sum(x == y for x, y in zip(got, want))
            n += len(want)
    return exact / len(held_out), ok / n


def main(argv=None) -> dict:
    args = parse_args(argv)
    run = Run(args.out_dir or "runs/addition")
    mt.manual_seed(args.seed)
    task = AdditionTask(n_digits=args.digits)
    held_out = task.sample(np.random.default_rng(10_000 + args.seed), args.eval_size)
    exclude = set(held_out)                      # training never sees a held-out problem
    cfg = GPTConfig(vocab_size=task.vocab_size, block_size=task.seq_len + 1, n_layer=args.layers,
                    n_head=args.heads, n_embd=args.d_model, n_ff=args.ff)
    model = GPT(cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"addition: {n_params:,} parameters, up to {args.digits}-digit operands, device {args.device}")

    def batch_fn(rng):
        return task.batch(task.sample(rng, args.batch_size, exclude))

    def loss_of(model, batch):
        x, y = batch
        return loss_fn(model(mt.tensor(x, device=args.device)), y, args.device, ignore_index=-100), int((y >= 0).sum())

    last = train(args, run, model, batch_fn, loss_of, lambda m: evaluate(m, task, held_out, args.device),
                 np.random.default_rng(args.seed))
    a, b = held_out[0]
    pred = model.greedy(np.array([task.prompt(a, b)], np.int64), task.n_digits + 2, args.device)[0]
    x, _ = task.batch([(a, b)])
    L = len(task.prompt(a, b)) + len(str(a + b)) + 1                    # prompt, answer, EOS
    attn = model.self_attention_map(mt.tensor(x[:, :L], device=args.device))[0]
    labels = ["<bos>"] + list(task.decode(x[0, 1:L])) + ["<eos>"]
    plots = try_plots(run, attn, xlabels=labels[:L], ylabels=labels[:L], title="addition",
                      attention_title="causal self-attention, last block (head mean)")
    shown = task.decode(pred[: list(pred).index(EOS)] if EOS in pred else pred)
    a, b = f"{a:0{args.digits}d}", f"{b:0{args.digits}d}"
    info = {"task": "addition", "steps": last["step"], "elapsed_s": last["elapsed_s"],
            "held_out_exact_match": last["seq_acc"], "held_out_digit_acc": last["token_acc"],
            "parameters": n_params, "seed": args.seed, "device": str(args.device),
            "example": f"{a}+{b}={shown}", "plots": plots}
    run.summary(info)
    print(f"example: {a}+{b}={shown}   (true {int(a) + int(b)})")
    print(f"done: step {last['step']}, {last['elapsed_s']:.0f}s, held-out exact match {last['seq_acc']:.4f} "
          f"(digit accuracy {last['token_acc']:.4f}); metrics in {run.dir}/")
    return info


if __name__ == "__main__":
    main()
