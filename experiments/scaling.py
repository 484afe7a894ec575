"""Why attention divides by √d, measured: variance, saturation, gradients and training.

    python experiments/scaling.py                 # all four parts, tables on stdout, PNGs in --out
    python experiments/scaling.py --quick         # tiny settings (seconds): a smoke run

1. Variance. For q, k ~ N(0, I_d) the score q·k is a sum of d products of unit variance, so
   Var(q·k) = d: the measured variance over --samples draws against d, d = 4 … 1024.
2. Saturation. One query against n keys: the softmax of the n scores, with and without
   1/√d. Without it the scores spread as √d, the row becomes one-hot: entropy → 0 and the
   largest weight → 1.
3. Gradients. ‖∂loss/∂Q‖ and ‖∂loss/∂K‖ through the fused attention
   (``F.scaled_dot_product_attention``, ``scale=None`` = 1/√d against ``scale=1.0``) for a
   random upstream gradient of unit norm per row: a one-hot softmax passes (almost) no gradient to the
   scores, so Q and K stop learning.
4. Training. A one-layer, one-head attention model learns to reverse a fixed-length
   sequence, with a large head dimension, with and without the scale (same seed, data,
   Adam steps); queries and keys start with unit-variance coordinates, the setting of part 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

import minitrans as mt
import minitrans.nn.functional as F
from minitrans import nn
from minitrans.data import ReverseTask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import _pyplot, reversal_backward  # noqa: E402


def dims(max_d: int) -> list[int]:
    return [2 ** k for k in range(2, int(math.log2(max_d)) + 1)]


# ----------------------------------------------------------------------------- 1. variance
def variance(ds, samples: int, rng, chunk: int = 20_000) -> list[dict]:
    """Measured Var(q·k) for q, k ~ N(0, I_d), computed with minitrans ops in float64."""
    rows = []
    for d in ds:
        s1 = s2 = 0.0
        n = 0
        for start in range(0, samples, chunk):
            m = min(chunk, samples - start)
            q = mt.tensor(rng.standard_normal((m, d)))
            k = mt.tensor(rng.standard_normal((m, d)))
            dot = (q * k).sum(dim=-1)
            s1 += dot.sum().item()
            s2 += (dot * dot).sum().item()
            n += m
        var = s2 / n - (s1 / n) ** 2
        # the sample variance of a variable with kurtosis κ = 3 + 6/d has relative standard error √((κ-1)/N)
        se = math.sqrt((2 + 6 / d) / n)
        rows.append({"d": d, "predicted": d, "measured": var, "ratio": var / d, "rel_se": se,
                     "scaled_measured": var / d})
    return rows


# ----------------------------------------------------------------------------- 2. saturation
def saturation(ds, n_keys: int, rows_per_d: int, rng) -> list[dict]:
    out = []
    for d in ds:
        q = rng.standard_normal((rows_per_d, 1, d))
        k = rng.standard_normal((rows_per_d, n_keys, d))
        scores = mt.tensor((q * k).sum(-1))                       # (rows, n_keys)
        rec = {"d": d, "n": n_keys}
        for label, s in (("unscaled", 1.0), ("scaled", 1 / math.sqrt(d))):
            p = F.softmax(scores * s, dim=-1).numpy()
            ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)
            rec[f"entropy_{label}"] = float(ent.mean())
            rec[f"max_weight_{label}"] = float(p.max(-1).mean())
        out.append(rec)
    return out


# ----------------------------------------------------------------------------- 3. gradients
def gradients(ds, batch: int, T: int, repeats: int, rng) -> list[dict]:
    """‖∂L/∂Q‖ and ‖∂L/∂K‖ per row (one query or key vector), L = Σ out ⊙ G, G ~ N(0, 1/d).

    Two summaries over the batch·T rows of ``repeats`` draws: the root mean square (the size of
    the whole gradient) and the median row (what a typical query or key receives).
    """
    out = []
    for d in ds:
        rec = {"d": d}
        acc = {}
        for _ in range(repeats):
            q_np, k_np, v_np = (rng.standard_normal((batch, T, d)).astype(np.float32) for _ in range(3))
            g_np = (rng.standard_normal((batch, T, d)) / math.sqrt(d)).astype(np.float32)   # unit norm per row
            for label, scale in (("scaled", None), ("unscaled", 1.0)):
                q, k, v = (mt.tensor(a, requires_grad=True) for a in (q_np, k_np, v_np))
                o = F.scaled_dot_product_attention(q, k, v, scale=scale)
                (o * mt.tensor(g_np)).sum().backward()
                for name, t in (("dQ", q), ("dK", k), ("dV", v)):
                    acc.setdefault(f"{name}_{label}", []).append(np.linalg.norm(t.grad.numpy(), axis=-1).ravel())
        for key, vals in acc.items():
            rows = np.concatenate(vals).astype(np.float64)
            rec[key] = float(np.sqrt((rows ** 2).mean()))
            rec[key + "_median"] = float(np.median(rows))
        out.append(rec)
    return out


# ----------------------------------------------------------------------------- 4. training
class ReverseAttention(nn.Module):
    """Embedding + positions → pre-LN single-head attention (query/key width ``d_head``) → FF → logits."""

    def __init__(self, vocab: int, length: int, d_model: int, d_head: int, scale: float | None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(length, d_model)
        self.norm1, self.norm2, self.norm_out = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.wq, self.wk = nn.Linear(d_model, d_head, bias=False), nn.Linear(d_model, d_head, bias=False)
        self.wv, self.wo = nn.Linear(d_model, d_model, bias=False), nn.Linear(d_model, d_model, bias=False)
        self.ff = nn.FeedForward(d_model, 2 * d_model)
        self.head = nn.Linear(d_model, vocab)
        for w in (self.wq, self.wk):            # unit-variance query/key coordinates for LayerNormed inputs
            nn.init.normal_(w.weight, 0.0, 1.0 / math.sqrt(d_model))
        self.scale = scale

    def forward(self, tokens: mt.Tensor) -> mt.Tensor:
        B, T = tokens.shape
        x = self.embed(tokens) + self.pos(mt.arange(T, device=tokens.device))
        h = self.norm1(x)
        x = x + self.wo(F.scaled_dot_product_attention(self.wq(h), self.wk(h), self.wv(h), scale=self.scale))
        x = x + self.ff(self.norm2(x))
        return self.head(self.norm_out(x))


def train(d_head: int, scale, steps: int, seed: int, length: int = 8, d_model: int = 64, batch: int = 64,
          lr: float = 3e-3, log_every: int = 10, optimizer: str = "adam") -> dict:
    task = ReverseTask(n_symbols=16, min_len=length, max_len=length)
    mt.manual_seed(seed)
    model = ReverseAttention(task.vocab_size, length, d_model, d_head, scale)
    opt = (mt.optim.Adam if optimizer == "adam" else mt.optim.SGD)(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    held = np.array(task.sample(np.random.default_rng(10_000 + seed), 256))
    curve = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        loss = reversal_backward(model, opt, task, rng, batch)
        gq = float(np.linalg.norm(model.wq.weight.grad.numpy()))
        opt.step()
        if step % log_every == 0 or step == steps:
            with mt.no_grad():
                pred = model(mt.tensor(held)).numpy().argmax(-1)
            acc = float((pred == held[:, ::-1]).mean())
            curve.append({"step": step, "loss": loss.item(), "token_acc": acc, "grad_wq": gq})
    return {"d_head": d_head, "scale": "1/sqrt(d)" if scale is None else scale, "seed": seed, "curve": curve,
            "final_acc": curve[-1]["token_acc"], "seconds": time.perf_counter() - t0,
            "steps_to_90": next((c["step"] for c in curve if c["token_acc"] >= 0.9), None)}


# ----------------------------------------------------------------------------- output
def _markdown_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def tables(res: dict) -> str:
    out = ["Variance of q·k, q, k ~ N(0, I_d) "
           f"({res['args']['samples']:,} draws per d; measured/predicted and its standard error)", "",
           _markdown_table(["d", "predicted d", "measured", "measured / d", "± s.e."],
               [(r["d"], r["d"], f"{r['measured']:.2f}", f"{r['ratio']:.4f}", f"{r['rel_se']:.4f}")
                for r in res["variance"]]), "",
           f"Softmax of one query against n = {res['args']['keys']} keys (mean over {res['args']['rows']} rows; "
           f"uniform entropy ln n = {math.log(res['args']['keys']):.2f})", "",
           _markdown_table(["d", "entropy 1/√d", "entropy no scale", "max weight 1/√d", "max weight no scale"],
               [(r["d"], f"{r['entropy_scaled']:.3f}", f"{r['entropy_unscaled']:.3f}",
                 f"{r['max_weight_scaled']:.3f}", f"{r['max_weight_unscaled']:.3f}") for r in res["saturation"]]),
           "",
           f"Gradient norms per query/key row through the fused attention: root mean square and median over "
           f"{res['args']['repeats']}·B·T rows (B={res['args']['batch']}, T={res['args']['T']}, float32)", "",
           _markdown_table(["d", "‖∂L/∂q‖ rms 1/√d", "rms no scale", "median 1/√d", "median no scale",
                "‖∂L/∂k‖ rms 1/√d", "rms no scale", "median 1/√d", "median no scale"],
               [(r["d"], *(f"{r[k]:.3g}" for k in ("dQ_scaled", "dQ_unscaled", "dQ_scaled_median",
                                                    "dQ_unscaled_median", "dK_scaled", "dK_unscaled",
                                                    "dK_scaled_median", "dK_unscaled_median")))
                for r in res["gradients"]])]
    if res.get("training"):
        out += ["", f"Reversal of length-{res['args']['length']} sequences, one head of query/key width "
                f"{res['args']['d_head']}, {res['args']['steps']} Adam steps, lr {res['args']['lr']} "
                "(held-out token accuracy)", "",
                _markdown_table(["scale", "seed", "acc. at 1/4 of steps", "final acc.", "steps to 90%", "‖∂L/∂W_q‖ at step "
                     f"{res['training'][0]['curve'][0]['step']}", "seconds"],
                    [(t["scale"], t["seed"], f"{t['curve'][len(t['curve']) // 4]['token_acc']:.3f}",
                      f"{t['final_acc']:.3f}", t["steps_to_90"] or "never", f"{t['curve'][0]['grad_wq']:.3g}",
                      f"{t['seconds']:.0f}") for t in res["training"]])]
    return "\n".join(out)


def plots(res: dict, out_dir: str) -> list[str]:
    plt = _pyplot()
    if plt is None:
        return []
    made = []

    def save(fig, name):
        fig.tight_layout()
        made.append(os.path.join(out_dir, name))
        fig.savefig(made[-1], dpi=100)
        plt.close(fig)

    v = res["variance"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    d = [r["d"] for r in v]
    ax.loglog(d, d, "k--", lw=1, label="predicted: d")
    ax.loglog(d, [r["measured"] for r in v], "o", label="measured Var(q·k)")
    ax.loglog(d, [r["scaled_measured"] for r in v], "s", label="measured Var(q·k/√d)")
    ax.set_xlabel("head dimension d")
    ax.set_ylabel("variance of the score")
    ax.set_title("q, k ~ N(0, I): the score's variance grows as d")
    ax.legend()
    save(fig, "variance.png")

    s = res["saturation"]
    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    d = [r["d"] for r in s]
    for label, style in (("scaled", "o-"), ("unscaled", "s-")):
        axs[0].semilogx(d, [r[f"entropy_{label}"] for r in s], style,
                        label="scores/√d" if label == "scaled" else "no scale")
        axs[1].semilogx(d, [r[f"max_weight_{label}"] for r in s], style,
                        label="scores/√d" if label == "scaled" else "no scale")
    axs[0].axhline(math.log(s[0]["n"]), color="k", lw=0.8, ls="--", label="uniform (ln n)")
    axs[0].set_ylabel("softmax entropy (nats)")
    axs[1].set_ylabel("largest attention weight")
    for ax in axs:
        ax.set_xlabel("head dimension d")
        ax.legend()
    fig.suptitle(f"one query against n = {s[0]['n']} keys: without the scale the row turns one-hot")
    save(fig, "saturation.png")

    g = res["gradients"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    d = [r["d"] for r in g]
    for key, style, label in (("dQ_scaled", "o-", "‖∂L/∂q‖ rms, 1/√d"),
                              ("dK_scaled", "^-", "‖∂L/∂k‖ rms, 1/√d"),
                              ("dQ_unscaled", "o--", "‖∂L/∂q‖ rms, no scale"),
                              ("dK_unscaled", "^--", "‖∂L/∂k‖ rms, no scale"),
                              ("dQ_scaled_median", "o:", "‖∂L/∂q‖ median row, 1/√d"),
                              ("dQ_unscaled_median", "x:", "‖∂L/∂q‖ median row, no scale"),
                              ("dK_unscaled_median", "+:", "‖∂L/∂k‖ median row, no scale")):
        ax.loglog(d, [max(r[key], 1e-12) for r in g], style, label=label)
    ax.set_xlabel("head dimension d")
    ax.set_ylabel("gradient norm of one query/key row")
    ax.set_title("gradients reaching Q and K through the fused attention")
    ax.legend(fontsize=8)
    save(fig, "gradients.png")

    if res.get("training"):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for t in res["training"]:
            c = t["curve"]
            ax.plot([r["step"] for r in c], [r["token_acc"] for r in c],
                    "-" if t["scale"] == "1/sqrt(d)" else "--", label=f"scale {t['scale']}, seed {t['seed']}")
        ax.set_xlabel("Adam step")
        ax.set_ylabel("held-out token accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"reversal, one head, query/key width {res['args']['d_head']}")
        ax.legend(fontsize=8)
        save(fig, "training.png")
    return made


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-d", type=int, default=1024)
    p.add_argument("--samples", type=int, default=200_000, help="draws of (q, k) per d for the variance")
    p.add_argument("--keys", type=int, default=64, help="keys per softmax row (saturation)")
    p.add_argument("--rows", type=int, default=2000, help="softmax rows per d (saturation)")
    p.add_argument("--batch", type=int, default=8, help="batch of the gradient measurement")
    p.add_argument("--T", type=int, default=32, help="sequence length of the gradient measurement")
    p.add_argument("--repeats", type=int, default=5, help="draws per d of the gradient measurement (median)")
    p.add_argument("--d-head", type=int, default=1024, help="query/key width of the training run")
    p.add_argument("--length", type=int, default=16, help="sequence length of the training run")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the training run")
    p.add_argument("--steps", type=int, default=200, help="training steps per run (0: no training)")
    p.add_argument("--seeds", type=int, default=2, help="training seeds per setting")
    p.add_argument("--out", default="runs/scaling", help="directory for results.json and the PNGs")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    a = p.parse_args(argv)
    if a.quick:
        a.max_d, a.samples, a.rows, a.repeats, a.steps, a.seeds, a.d_head, a.length = 32, 4000, 50, 1, 20, 1, 32, 8
    os.makedirs(a.out, exist_ok=True)
    t0 = time.perf_counter()
    ds = dims(a.max_d)
    res = {"args": vars(a)}
    res["variance"] = variance(ds, a.samples, np.random.default_rng(0))
    res["saturation"] = saturation(ds, a.keys, a.rows, np.random.default_rng(1))
    res["gradients"] = gradients(ds, a.batch, a.T, a.repeats, np.random.default_rng(2))
    res["training"] = [train(a.d_head, scale, a.steps, seed, length=a.length, lr=a.lr,
                             log_every=max(1, a.steps // 40))
                       for seed in range(a.seeds) for scale in (None, 1.0)] if a.steps else []
    res["seconds"] = time.perf_counter() - t0
    res["loadavg"] = os.getloadavg()
    text = tables(res)
    print(text)
    print(f"\n{res['seconds']:.0f} s; load average {' '.join(f'{x:.2f}' for x in res['loadavg'])} "
          "(the machine is shared)")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(a.out, "tables.md"), "w") as f:
        f.write(text + "\n")
    res["plots"] = plots(res, a.out)
    return res


if __name__ == "__main__":
    main()
