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
from minitrans.data import BOS, EOS, PAD, ReverseTask
from minitrans.models import register
from minitrans.train import add_arguments, cli, start_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_trainer, seq_loss, try_plots  # noqa: E402
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=type(
        "Fmt", (argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter), {}))
    add_arguments(p, steps=6000, batch_size=64, lr=3e-3, warmup=200, eval_every=250, eval_size=500, target=0.99)
    m = p.add_argument_group("model and task")
    m.add_argument("--embed", type=int, default=64, help="embedding width")
    m.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    m.add_argument("--layers", type=int, default=2, help="LSTM layers in the encoder and in the decoder")
    m.add_argument("--min-len", type=int, default=4, help="shortest sequence")
    m.add_argument("--max-len", type=int, default=16, help="longest sequence")
    m.add_argument("--symbols", type=int, default=17, help="distinct tokens (vocab = symbols + PAD/BOS/EOS)")
    p.add_argument("--no-plots", action="store_true", help="skip loss.png (matplotlib takes seconds to start)")
    return p


def main(argv=None) -> dict:
    setup = start_run(build_parser(), argv, "reverse-lstm")
    args = setup.args
    mt.manual_seed(args.seed)
    task = ReverseTask(n_symbols=args.symbols, min_len=args.min_len, max_len=args.max_len)
    held_out = task.sample(np.random.default_rng(10_000 + args.seed), args.eval_size)   # the set reverse.py uses
    exclude = set(held_out)
    cfg = LSTMSeq2SeqConfig(vocab_size=task.vocab_size, embed_dim=args.embed, hidden_size=args.hidden,
                            num_layers=args.layers, pad_id=PAD)
    model = LSTMSeq2Seq(cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"reverse-lstm: {n_params:,} parameters, vocab {task.vocab_size}, lengths {task.min_len}-{task.max_len}, "
          f"device {args.device}, run directory {setup.dir}")

    def batch_fn(rng):
        return task.batch(task.sample(rng, args.batch_size, exclude))

    def loss_fn(model, batch):
        src, tgt_in, tgt_out = batch
        logits = model(mt.tensor(src, device=args.device), mt.tensor(tgt_in, device=args.device))
        return seq_loss(logits, tgt_out, args.device, ignore_index=PAD), int((tgt_out != PAD).sum())

    settings = {"name": "reverse", "n_symbols": task.n_symbols, "min_len": task.min_len, "max_len": task.max_len,
                "pad": PAD, "bos": BOS, "eos": EOS}
    trainer = make_trainer(setup, model, loss_fn, batch_fn, lambda m: evaluate(m, task, held_out, args.device),
                           settings, "experiments/reverse_lstm.py")
    res = trainer.fit()
    info = {"task": "reverse", "model": "lstm", "steps": res.step, "ended": res.ended,
            "target_met": res.target_met, "signal": res.signal, "elapsed_s": res.elapsed_s,
            "held_out_exact_match": res.metrics.get("seq_acc"), "held_out_token_acc": res.metrics.get("token_acc"),
            "parameters": n_params, "seed": args.seed, "device": str(args.device), "run_dir": setup.dir}
    if res.ended != "interrupted":
        info["plots"] = [] if args.no_plots else try_plots(setup.dir, res.rows, "reverse (LSTM encoder–decoder)")
        with open(os.path.join(setup.dir, "summary.json"), "w") as f:
            json.dump(info, f, indent=2)
    print(res.message)
    return info


if __name__ == "__main__":
    sys.exit(cli(main))
