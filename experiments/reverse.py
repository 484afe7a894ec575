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

import minitrans as mt
import minitrans.distributed as dist
from minitrans.data import BOS, EOS, PAD, ReverseTask
from minitrans.models import Seq2Seq, Seq2SeqConfig
from minitrans.train import add_arguments, cli, start_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_reverse_arguments, greedy_accuracy, held_out_split, make_trainer,  # noqa: E402
                    new_parser, reverse_settings, reverse_task, run_summary, seq2seq_loss_fn, try_plots,
                    write_summary)


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    add_arguments(p, steps=6000, batch_size=64, lr=1e-3, warmup=200, eval_every=250, eval_size=500, target=0.99)
    m = p.add_argument_group("model and task")
    m.add_argument("--d-model", type=int, default=64, help="embedding width")
    m.add_argument("--heads", type=int, default=4, help="attention heads")
    m.add_argument("--layers", type=int, default=2, help="encoder layers = decoder layers")
    m.add_argument("--ff", type=int, default=128, help="feed-forward width")
    add_reverse_arguments(m)
    m.add_argument("--no-positional", action="store_true", help="train without positional encoding")
    return p


def evaluate(model: Seq2Seq, task: ReverseTask, held_out, device) -> dict:
    """Exact-sequence and token accuracy of greedy decoding on the held-out set."""
    return greedy_accuracy(
        held_out, lambda seqs: model.greedy(mt.tensor(task.batch(seqs)[0], device=device), BOS, task.max_len + 1),
        lambda s: list(task.target(s)) + [EOS])


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
    task = reverse_task(args)
    held_out, batch_fn = held_out_split(task, args)      # training never sees a held-out sequence
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

    trainer = make_trainer(setup, net, seq2seq_loss_fn(args.device), batch_fn,
                           lambda m: evaluate(m, task, held_out, args.device), reverse_settings(task),
                           "experiments/reverse.py")
    if parallel:
        trainer.resume_command = f"mpiexec -n {dist.get_world_size()} python -m mpi4py experiments/reverse.py"
    res = trainer.fit()
    info = run_summary("reverse", res, setup, n_params, positional=not args.no_positional)
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
        write_summary(setup.dir, info)
    print(res.message)
    return info


if __name__ == "__main__":
    sys.exit(cli(main))
