"""Train a character-level language model (the decoder-only GPT) on any UTF-8 text, and sample from it.

    python experiments/charlm.py                              # the project's own docs/*.md: offline
    python experiments/charlm.py --text my_book.txt --steps 5000
    python experiments/charlm.py --sample runs/charlm/checkpoint.npz --prompt "The " --chars 400

Training holds out the last --held-out fraction of the text; each evaluation reports the held-out
loss per character and next-character accuracy and prints a sample (cached generation,
--temperature / --top-k). The run ends at the first of: accuracy >= --target, --steps,
--time-limit; checkpoints, metrics.csv, summary.json and loss.png go to the run directory.
The checkpoint carries the character set, so --sample needs nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

import minitrans as mt
import minitrans.nn.functional as F
from minitrans.models import GPT, GPTConfig, checkpoint_task, from_checkpoint
from minitrans.train import add_arguments, cli, start_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_trainer, try_plots  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=type(
        "Fmt", (argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter), {}))
    add_arguments(p, steps=3000, batch_size=32, lr=2e-3, warmup=100, eval_every=250, eval_size=16, target=0.75,
                  time_limit=None)
    p._option_string_actions["--target"].help = "stop at the first evaluation whose held-out next-character " \
                                                "accuracy is at least this"
    p._option_string_actions["--eval-size"].help = "held-out windows of --block-size characters per evaluation"
    m = p.add_argument_group("text and model")
    m.add_argument("--text", default=None, help="a UTF-8 text file; default: the repository's docs/*.md")
    m.add_argument("--held-out", type=float, default=0.1, help="fraction of the text (its end) kept for evaluation")
    m.add_argument("--block-size", type=int, default=128, help="context length in characters")
    m.add_argument("--layers", type=int, default=4)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--d-model", type=int, default=128)
    m.add_argument("--dropout", type=float, default=0.1)
    m.add_argument("--no-plots", action="store_true", help="skip loss.png")
    m.add_argument("--pos", choices=("sinusoidal", "rotary"), default="sinusoidal")
    s = p.add_argument_group("sampling")
    s.add_argument("--sample", metavar="CHECKPOINT", default=None, help="only generate from this checkpoint")
    s.add_argument("--prompt", default="\n", help="text the sample continues")
    s.add_argument("--chars", type=int, default=300, help="characters to generate")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=None)
    return p


def read_text(path: str | None) -> str:
    if path is None:
        files = sorted(DOCS.glob("*.md"))
        if not files:
            raise SystemExit(f"error: no --text given and no docs/*.md found under {DOCS}")
        return "\n\n".join(f.read_text(encoding="utf-8") for f in files)
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: cannot read --text {path} as UTF-8: {e}") from None


def sample(model: GPT, chars: str, prompt: str, n: int, temperature: float, top_k: int | None,
           device="cpu") -> str:
    """``prompt`` continued by up to ``n`` characters (the context is cropped to the model's block size)."""
    index = {c: i for i, c in enumerate(chars)}
    unknown = sorted({c for c in prompt if c not in index})
    if unknown:
        raise SystemExit(f"error: the prompt has characters the model never saw: {''.join(unknown)!r}")
    if not prompt:
        raise SystemExit("error: the prompt is empty; give at least one character")
    bs = model.config.block_size
    ids = [index[c] for c in prompt][-(bs // 2):]
    out = []
    while len(out) < n:                                  # crop and continue when the block is full
        ctx = mt.tensor(np.array([ids[-(bs // 2):]], np.int64), device=device)
        step = min(n - len(out), bs - ctx.shape[1])
        new = model.generate(ctx, step, temperature=temperature, top_k=top_k).numpy()[0, ctx.shape[1]:]
        out += list(new)
        ids += list(new)
    return prompt + "".join(chars[i] for i in out)


def run_sample(args) -> dict:
    task = checkpoint_task(args.sample)
    if task.get("name") != "charlm":
        raise SystemExit(f"error: {args.sample} is not a charlm checkpoint (task {task.get('name')!r})")
    chars = "".join(chr(c) for c in task["chars"])
    model = from_checkpoint(args.sample, map_location=args.device)
    mt.manual_seed(args.seed)
    text = sample(model, chars, args.prompt, args.chars, args.temperature, args.top_k, args.device)
    print(text)
    return {"sample": text}


def main(argv=None) -> dict:
    parser = build_parser()
    pre = parser.parse_args(argv)
    if pre.sample:
        return run_sample(pre)
    setup = start_run(parser, argv, "charlm")
    args = setup.args
    mt.manual_seed(args.seed)
    text = read_text(args.text)
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text], np.int64)
    cut = int(len(data) * (1 - args.held_out))
    train, held = data[:cut], data[cut:]
    T = args.block_size
    if len(train) <= T + 1 or len(held) <= T + 1:
        raise SystemExit(f"error: the text ({len(data)} characters) is too short for --block-size {T} "
                         f"with --held-out {args.held_out}")
    cfg = GPTConfig(vocab_size=len(chars), block_size=T, n_layer=args.layers, n_head=args.heads,
                    n_embd=args.d_model, dropout=args.dropout, norm_first=True, pos_encoding=args.pos)
    model = GPT(cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"charlm: {n_params:,} parameters, {len(chars)} distinct characters, {len(train):,} training and "
          f"{len(held):,} held-out characters, device {args.device}, run directory {setup.dir}")
    eval_starts = np.linspace(0, len(held) - T - 1, args.eval_size).astype(int)

    def windows(src: np.ndarray, starts) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(starts)[:, None] + np.arange(T + 1)[None, :]
        w = src[idx]
        return w[:, :-1], w[:, 1:]

    def batch_fn(rng):
        return windows(train, rng.integers(0, len(train) - T - 1, args.batch_size))

    def loss_fn(model, batch):
        x, y = batch
        logits = model(mt.tensor(x, device=args.device))               # (B, T, vocab)
        B, _, V = logits.shape
        return F.cross_entropy(logits.reshape(B * T, V), mt.tensor(y.reshape(-1), device=args.device)), y.size

    def evaluate(m) -> dict:
        x, y = windows(held, eval_starts)
        with mt.no_grad():
            logits = m(mt.tensor(x, device=args.device))
            B, _, V = logits.shape
            loss = F.cross_entropy(logits.reshape(B * T, V), mt.tensor(y.reshape(-1), device=args.device)).item()
            acc = float((logits.numpy().argmax(-1) == y).mean())
        prompt = args.prompt if args.prompt and set(args.prompt) <= set(chars) else text[cut]
        print("--- sample ---\n" + sample(m, chars, prompt, 200, args.temperature, args.top_k, args.device)
              + "\n--------------", flush=True)
        return {"token_acc": acc, "held_loss": loss}

    settings = {"name": "charlm", "chars": [ord(c) for c in chars], "block_size": T}
    trainer = make_trainer(setup, model, loss_fn, batch_fn, evaluate, settings, "experiments/charlm.py",
                           ("token_acc", "held_loss"))
    trainer.budget.metric, trainer.budget.metric_label = "token_acc", "held-out next-character accuracy"
    res = trainer.fit()
    info = {"task": "charlm", "steps": res.step, "ended": res.ended, "elapsed_s": res.elapsed_s,
            "held_out_next_char_acc": res.metrics.get("token_acc"), "held_out_loss": res.metrics.get("held_loss"),
            "parameters": n_params, "text": args.text or "docs/*.md", "run_dir": setup.dir,
            "load_avg": os.getloadavg()}
    if res.ended != "interrupted":
        info["plots"] = [] if args.no_plots else try_plots(setup.dir, res.rows, "charlm")
        with open(os.path.join(setup.dir, "summary.json"), "w") as f:
            json.dump(info, f, indent=2)
        print(f"sample from the checkpoint: python experiments/charlm.py --sample {setup.dir}/checkpoint.npz")
    print(res.message)
    return info


if __name__ == "__main__":
    sys.exit(cli(main))
