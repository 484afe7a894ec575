"""Train an encoder–decoder transformer to reverse random token sequences (the project's main job).

    python experiments/reverse.py                 # stops at >= 99% held-out exact match (or 6000 steps)
    python experiments/reverse.py --no-positional # the same model without positions: it cannot
    python experiments/reverse.py --resume        # continue the newest runs/reverse* from its checkpoint
    mpiexec -n 2 python -m mpi4py experiments/reverse.py   # data-parallel over 2 ranks (docs/distributed.md)

Under mpiexec every rank trains on its share of the same global --batch-size; only rank 0
prints, shows progress and writes the run directory, and a run may resume on another number
of ranks. The run ends at the first of: the target (checked every --eval-every steps), the step budget,
the optional --time-limit; its last line says which, and warns when the target was missed.
Ctrl-C finishes the current step, writes a checkpoint and prints the command that resumes.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import minitrans as mt
import minitrans.distributed as dist
from minitrans.data import BOS, EOS, PAD, ReverseTask
from minitrans.models import Seq2Seq, Seq2SeqConfig
from minitrans.train import add_arguments, cli, start_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_trainer, seq_loss, try_plots  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=type(
        "Fmt", (argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter), {}))
    add_arguments(p, steps=6000, batch_size=64, lr=1e-3, warmup=200, eval_every=250, eval_size=500, target=0.99)
    m = p.add_argument_group("model and task")
    m.add_argument("--d-model", type=int, default=64, help="embedding width")
    m.add_argument("--heads", type=int, default=4, help="attention heads")
    m.add_argument("--layers", type=int, default=2, help="encoder layers = decoder layers")
    m.add_argument("--ff", type=int, default=128, help="feed-forward width")
    m.add_argument("--min-len", type=int, default=4, help="shortest sequence")
    m.add_argument("--max-len", type=int, default=16, help="longest sequence")
    m.add_argument("--symbols", type=int, default=17, help="distinct tokens (vocab = symbols + PAD/BOS/EOS)")
    m.add_argument("--no-positional", action="store_true", help="train without positional encoding")
    return p


def evaluate(model: Seq2Seq, task: ReverseTask, held_out, device) -> dict:
    """Exact-sequence and token accuracy of greedy decoding on the held-out set."""
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
    return {"seq_acc": exact / len(held_out), "token_acc": tok_ok / tok_n}


def main(argv=None) -> dict:
    parallel = dist.launched_by_mpiexec()
    if parallel and not dist.is_initialized():
        dist.init_process_group(backend="mpi")
    main_rank = not parallel or dist.get_rank() == 0
    if not main_rank:
        sys.stdout = open(os.devnull, "w")       # one voice: rank 0's (errors still reach stderr)
    parse = lambda: start_run(build_parser(), argv, lambda a: "reverse-nopos" if a.no_positional else "reverse")  # noqa: E731
    setup = dist.on_main(parse) if parallel else parse()     # rank 0 picks the run directory for all
    args = setup.args
    mt.manual_seed(args.seed)
    task = ReverseTask(n_symbols=args.symbols, min_len=args.min_len, max_len=args.max_len)
    held_out = task.sample(np.random.default_rng(10_000 + args.seed), args.eval_size)
    exclude = set(held_out)                      # training never sees a held-out sequence
    cfg = Seq2SeqConfig(vocab_size=task.vocab_size, d_model=args.d_model, nhead=args.heads, num_layers=args.layers,
                        dim_feedforward=args.ff, positional=not args.no_positional, max_len=args.max_len + 2,
                        pad_id=PAD)
    model = Seq2Seq(cfg).to(args.device)
    net = dist.DistributedDataParallel(model) if parallel else model    # the one that trains
    n_params = sum(p.numel() for p in model.parameters())
    print(f"reverse: {n_params:,} parameters, vocab {task.vocab_size}, lengths {task.min_len}-{task.max_len}, "
          f"positional={'off' if args.no_positional else 'on'}, device {args.device}, run directory {setup.dir}"
          + (f", {dist.get_world_size()} ranks of {args.batch_size // dist.get_world_size()} examples" if parallel
             else ""))

    def batch_fn(rng):
        return task.batch(task.sample(rng, args.batch_size, exclude))

    def loss_fn(model, batch):
        src, tgt_in, tgt_out = batch
        logits = model(mt.tensor(src, device=args.device), mt.tensor(tgt_in, device=args.device))
        return seq_loss(logits, tgt_out, args.device, ignore_index=PAD), int((tgt_out != PAD).sum())

    settings = {"name": "reverse", "n_symbols": task.n_symbols, "min_len": task.min_len, "max_len": task.max_len,
                "pad": PAD, "bos": BOS, "eos": EOS}
    trainer = make_trainer(setup, net, loss_fn, batch_fn, lambda m: evaluate(m, task, held_out, args.device),
                           settings, "experiments/reverse.py")
    if parallel:
        trainer.resume_command = f"mpiexec -n {dist.get_world_size()} python -m mpi4py experiments/reverse.py"
    res = trainer.fit()
    info = {"task": "reverse", "steps": res.step, "ended": res.ended, "target_met": res.target_met,
            "signal": res.signal, "elapsed_s": res.elapsed_s, "held_out_exact_match": res.metrics.get("seq_acc"),
            "held_out_token_acc": res.metrics.get("token_acc"), "positional": not args.no_positional,
            "parameters": n_params, "seed": args.seed, "device": str(args.device), "run_dir": setup.dir}
    if res.ended != "interrupted" and main_rank:  # an interrupted run leaves fast: plots come with the resumed one
        example = held_out[0]
        src, tgt_in, _ = task.batch([example])
        attn = model.cross_attention_map(mt.tensor(src, device=args.device), mt.tensor(tgt_in, device=args.device))
        L = len(example)
        info["plots"] = try_plots(
            setup.dir, res.rows, "reverse", attn[0][: L + 1, :L], xlabels=[str(t) for t in example],
            ylabels=["<bos>"] + [str(t) for t in task.target(example)],
            attention_title="cross-attention, last decoder layer (mean of heads), one held-out sequence",
            caption="Look for the anti-diagonal: while writing output token i the decoder reads source token "
                    "L-1-i, the one it is copying.")
        import json

        with open(os.path.join(setup.dir, "summary.json"), "w") as f:
            json.dump(info, f, indent=2)
    print(res.message)
    return info


if __name__ == "__main__":
    sys.exit(cli(main))
