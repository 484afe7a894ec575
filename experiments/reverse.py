"""Train an encoder–decoder transformer to reverse random token sequences (the project's main job).

    python experiments/reverse.py                 # default run: ≥ 99% held-out exact match
    python experiments/reverse.py --no-positional # same model without positions: it cannot
    python experiments/reverse.py --resume        # continue from runs/reverse/checkpoint.npz
"""
from __future__ import annotations

import argparse
import numpy as np

import minitrans as mt
from minitrans.data import BOS, EOS, PAD, ReverseTask

from common import Run, add_training_args, train, try_plots
from minitrans.models import Seq2Seq, Seq2SeqConfig
from seq2seq import loss_fn


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, steps=3000, batch_size=64, lr=1e-3, warmup=200, eval_every=250, eval_size=500,
                      target=0.99, time_limit=290.0)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2, help="encoder layers = decoder layers")
    p.add_argument("--ff", type=int, default=128)
    p.add_argument("--min-len", type=int, default=4)
    p.add_argument("--max-len", type=int, default=16)
    p.add_argument("--symbols", type=int, default=17, help="distinct tokens (vocab = symbols + PAD/BOS/EOS)")
    p.add_argument("--no-positional", action="store_true", help="train without positional encoding")
    return p.parse_args(argv)


def evaluate(model: Seq2Seq, task: ReverseTask, held_out, device) -> tuple[float, float]:
    """(exact-sequence accuracy, token accuracy) of greedy decoding on the held-out set."""
    exact = tok_ok = tok_n = 0
    for i in range(0, len(held_out), 250):
        seqs = held_out[i:i + 250]
        src, _, _ = task.batch(seqs)
        pred = model.greedy(mt.tensor(src, device=device), BOS, task.max_len + 1)
        for s, row in zip(seqs, pred):
            want = list(task.target(s)) + [EOS]
            got = list(row[:len(want)])
            exact += got == want
            tok_ok += sum(a == b for a, b in zip(got, want))
            tok_n += len(want)
    return exact / len(held_out), tok_ok / tok_n


def main(argv=None) -> dict:
    args = parse_args(argv)
    run = Run(args.out_dir or ("runs/reverse-nopos" if args.no_positional else "runs/reverse"))
    mt.manual_seed(args.seed)
    task = ReverseTask(n_symbols=args.symbols, min_len=args.min_len, max_len=args.max_len)
    held_out = task.sample(np.random.default_rng(10_000 + args.seed), args.eval_size)
    exclude = set(held_out)                      # training never sees a held-out sequence
    cfg = Seq2SeqConfig(vocab_size=task.vocab_size, d_model=args.d_model, nhead=args.heads, num_layers=args.layers,
                        dim_feedforward=args.ff, positional=not args.no_positional, max_len=args.max_len + 2)
    model = Seq2Seq(cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"reverse: {n_params:,} parameters, vocab {task.vocab_size}, lengths {task.min_len}-{task.max_len}, "
          f"positional={'off' if args.no_positional else 'on'}, device {args.device}")

    def batch_fn(rng):
        return task.batch(task.sample(rng, args.batch_size, exclude))

    def loss_of(model, batch):
        src, tgt_in, tgt_out = batch
        logits = model(mt.tensor(src, device=args.device), mt.tensor(tgt_in, device=args.device))
        return loss_fn(logits, tgt_out, args.device, ignore_index=PAD), int((tgt_out != PAD).sum())

    last = train(args, run, model, batch_fn, loss_of, lambda m: evaluate(m, task, held_out, args.device),
                 np.random.default_rng(args.seed))
    example = held_out[0]
    src, tgt_in, _ = task.batch([example])
    attn = model.cross_attention_map(mt.tensor(src, device=args.device), mt.tensor(tgt_in, device=args.device))
    L = len(example)
    plots = try_plots(run, attn[0][: L + 1, :L], xlabels=[str(t) for t in example],
                      ylabels=["<bos>"] + [str(t) for t in task.target(example)], title="reverse")
    info = {"task": "reverse", "steps": last["step"], "elapsed_s": last["elapsed_s"],
            "held_out_exact_match": last["seq_acc"], "held_out_token_acc": last["token_acc"],
            "positional": not args.no_positional, "parameters": n_params, "seed": args.seed,
            "device": str(args.device), "plots": plots}
    run.summary(info)
    print(f"done: step {last['step']}, {last['elapsed_s']:.0f}s, held-out exact-sequence accuracy "
          f"{last['seq_acc']:.4f} (token accuracy {last['token_acc']:.4f}); metrics in {run.dir}/")
    return info


if __name__ == "__main__":
    main()
