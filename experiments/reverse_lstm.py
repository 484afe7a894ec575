"""The "before" of the story: an LSTM encoder–decoder on the reversal task that reverse.py
gives the transformer, with the same data, held-out set, optimizer recipe and stop rule.

    python experiments/reverse_lstm.py                 # stops at >= 99% held-out exact match (or 6000 steps)
    python experiments/reverse_lstm.py --max-len 32    # longer sequences: the fixed-size state must hold them all

The encoder reads the source (left-padded, so that its last step is the last real token) and
hands its final (h, c) to the decoder, which writes the reversed sequence with teacher forcing.
No attention: everything the decoder knows about the source passes through one state vector
per layer, which is where LSTMs struggle with long-range order.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

import minitrans as mt
from minitrans import nn
from minitrans.data import PAD
from minitrans.models import register
from minitrans.train import add_arguments, cli, start_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_reverse_arguments, held_out_split, make_trainer, new_parser, reverse_settings,  # noqa: E402
                    reverse_task, run_summary, seq2seq_loss_fn, seq_loss, try_plots, write_summary)
from reverse import evaluate  # noqa: E402


@dataclass
class LSTMSeq2SeqConfig:
    vocab_size: int = 20
    embed_dim: int = 64
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.0
    pad_id: int = 0


class LSTMSeq2Seq(nn.Module):
    """Embedding → LSTM encoder → final (h, c) → LSTM decoder → logits; the interface of ``Seq2Seq``."""

    def __init__(self, config: LSTMSeq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        nn.init.normal_(self.embed.weight, 0.0, c.embed_dim ** -0.5)
        self.encoder = nn.LSTM(c.embed_dim, c.hidden_size, c.num_layers, batch_first=True, dropout=c.dropout)
        self.decoder = nn.LSTM(c.embed_dim, c.hidden_size, c.num_layers, batch_first=True, dropout=c.dropout)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)

    def encode(self, src: mt.Tensor):
        """The encoder's final (h, c) after the last real token of each row."""
        ids = src.numpy()
        lengths = (ids != self.config.pad_id).sum(1)
        left = np.full_like(ids, self.config.pad_id)
        for i, n in enumerate(lengths):                  # right padding -> left padding
            left[i, ids.shape[1] - n:] = ids[i, :n]
        return self.encoder(self.embed(mt.tensor(left, device=src.device)))[1]

    def forward(self, src: mt.Tensor, tgt_in: mt.Tensor) -> mt.Tensor:
        """src (B, S), tgt_in (B, T) token ids -> logits (B, T, vocab)."""
        out, _ = self.decoder(self.embed(tgt_in), self.encode(src))
        return self.head(out)

    @mt.no_grad()
    def greedy(self, src: mt.Tensor, bos: int, steps: int) -> np.ndarray:
        """Greedy decoding, one token at a time from the carried state: (B, steps) int64."""
        state = self.encode(src)
        tok = np.full((src.shape[0], 1), bos, np.int64)
        out = []
        for _ in range(steps):
            h, state = self.decoder(self.embed(mt.tensor(tok, device=src.device)), state)
            tok = self.head(h).argmax(-1).numpy()
            out.append(tok[:, 0])
        return np.stack(out, 1)


register(LSTMSeq2Seq, LSTMSeq2SeqConfig)   # checkpoints name the class and config, as for the transformer


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    add_arguments(p, steps=6000, batch_size=64, lr=3e-3, warmup=200, eval_every=250, eval_size=500, target=0.99)
    m = p.add_argument_group("model and task")
    m.add_argument("--embed", type=int, default=64, help="embedding width")
    m.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    m.add_argument("--layers", type=int, default=2, help="LSTM layers in the encoder and in the decoder")
    add_reverse_arguments(m)
    p.add_argument("--no-plots", action="store_true", help="skip loss.png (matplotlib takes seconds to start)")
    p.add_argument("--bench-cell", type=int, default=0, metavar="REPEATS",
                   help="instead of training: time forward + backward of one batch with the fused LSTM cell and "
                        "with the composed ops (REPEATS interleaved rounds each), print medians and exit")
    return p


def bench_cell(args) -> dict:
    """Median seconds of forward + backward of one training batch, fused cell vs composed ops."""
    import time

    from minitrans.nn import rnn

    task = reverse_task(args)
    model = LSTMSeq2Seq(LSTMSeq2SeqConfig(vocab_size=task.vocab_size, embed_dim=args.embed,
                                          hidden_size=args.hidden, num_layers=args.layers, pad_id=PAD))
    src, tgt_in, tgt_out = task.batch(task.sample(np.random.default_rng(0), args.batch_size))
    times = {True: [], False: []}
    for r in range(args.bench_cell + 1):
        for fused in (True, False):
            rnn.FUSED_LSTM["on"] = fused
            t0 = time.perf_counter()
            seq_loss(model(mt.tensor(src), mt.tensor(tgt_in)), tgt_out, ignore_index=PAD).backward()
            if r:                                        # round 0 warms up
                times[fused].append(time.perf_counter() - t0)
            model.zero_grad()
    rnn.FUSED_LSTM["on"] = True
    out = {"fused_s": float(np.median(times[True])), "composed_s": float(np.median(times[False])),
           "repeats": args.bench_cell, "loadavg": os.getloadavg()}
    out["speedup"] = out["composed_s"] / out["fused_s"]
    print(json.dumps(out))
    return out


def main(argv=None) -> dict:
    pre = build_parser().parse_known_args(argv)[0]
    if pre.bench_cell:
        return bench_cell(pre)
    setup = start_run(build_parser(), argv, "reverse-lstm")
    args = setup.args
    mt.manual_seed(args.seed)
    task = reverse_task(args)
    held_out, batch_fn = held_out_split(task, args)      # the set reverse.py uses
    cfg = LSTMSeq2SeqConfig(vocab_size=task.vocab_size, embed_dim=args.embed, hidden_size=args.hidden,
                            num_layers=args.layers, pad_id=PAD)
    model = LSTMSeq2Seq(cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"reverse-lstm: {n_params:,} parameters, vocab {task.vocab_size}, lengths {task.min_len}-{task.max_len}, "
          f"device {args.device}, run directory {setup.dir}")

    trainer = make_trainer(setup, model, seq2seq_loss_fn(args.device), batch_fn,
                           lambda m: evaluate(m, task, held_out, args.device), reverse_settings(task),
                           "experiments/reverse_lstm.py")
    res = trainer.fit()
    info = run_summary("reverse", res, setup, n_params, model="lstm")
    if res.ended != "interrupted":
        info["plots"] = [] if args.no_plots else try_plots(setup.dir, res.rows, "reverse (LSTM encoder–decoder)")
        write_summary(setup.dir, info)
    print(res.message)
    return info


if __name__ == "__main__":
    sys.exit(cli(main))
