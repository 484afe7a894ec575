"""How gradients flow through a deep stack: pre-LN against post-LN, with and without warm-up.

    python experiments/gradflow.py            # 4 runs (pre/post-LN x warm-up/none), heat maps in --out
    python experiments/gradflow.py --quick    # tiny settings (seconds): a smoke run

An 8-layer ``nn.TransformerEncoder`` (``norm_first`` given explicitly) learns to reverse
fixed-length sequences. Module hooks collect, for every layer and step:
  - the gradient norm at the layer's output, ‖∂loss/∂(layer output)‖ (a full backward hook);
  - the norm of the gradient of the layer's parameters, ‖∇W‖;
  - the update/weight ratio ‖ΔW‖/‖W‖ of the optimizer step.
The heat maps (layer × step) show where the gradient is large, where it vanishes, and how
hard each layer is pushed by the optimizer. ``GradFlowMonitor`` works on any model.
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
from minitrans import nn
from minitrans.data import ReverseTask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import _pyplot, reversal_backward  # noqa: E402


class GradFlowMonitor:
    """Per-layer gradient norms (by hooks) and update/weight ratios for a list of named modules.

        mon = GradFlowMonitor(model.encoder.layers)     # any iterable of modules
        loss.backward(); mon.before_step(); opt.step(); mon.after_step()
        mon.grad_out, mon.grad_param, mon.update_ratio  # lists (one per step) of per-layer values
        mon.remove()                                    # takes the hooks off
    """

    def __init__(self, modules) -> None:
        self.modules = list(modules)
        self._seen = [0.0] * len(self.modules)
        self.grad_out, self.grad_param, self.update_ratio = [], [], []
        self.handles = [m.register_full_backward_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        self._before = None

    def _hook(self, i):
        def hook(module, grad_input, grad_output):
            g = grad_output[0]
            if g is not None:
                self._seen[i] = math.sqrt(self._seen[i] ** 2 + float((g * g).sum().item()))
        return hook

    def before_step(self) -> None:
        """Call after backward, before ``optimizer.step()``: records gradients and snapshots the weights."""
        self.grad_out.append(list(self._seen))
        self._seen = [0.0] * len(self.modules)
        self.grad_param.append([_norm([p.grad for p in m.parameters() if p.grad is not None]) for m in self.modules])
        self._before = [[p.numpy().copy() for p in m.parameters()] for m in self.modules]

    def after_step(self) -> None:
        ratios = []
        for m, before in zip(self.modules, self._before):
            after = [p.numpy() for p in m.parameters()]
            delta = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(after, before)))
            ratios.append(delta / max(math.sqrt(sum(float((b ** 2).sum()) for b in before)), 1e-30))
        self.update_ratio.append(ratios)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _norm(tensors) -> float:
    return math.sqrt(sum(float((t.numpy().astype(np.float64) ** 2).sum()) for t in tensors))


class DeepEncoder(nn.Module):
    """Embedding + positions → ``layers`` encoder layers (pre- or post-LN) → (final norm for pre-LN) → logits."""

    def __init__(self, vocab: int, length: int, d_model: int, layers: int, norm_first: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(length, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead=2, dim_feedforward=2 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model) if norm_first else None)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: mt.Tensor) -> mt.Tensor:
        T = tokens.shape[1]
        return self.head(self.encoder(self.embed(tokens) + self.pos(mt.arange(T, device=tokens.device))))


def run(norm_first: bool, warmup: int, steps: int, layers: int, d_model: int, lr: float, seed: int,
        length: int = 8, batch: int = 32) -> dict:
    task = ReverseTask(n_symbols=16, min_len=length, max_len=length)
    mt.manual_seed(seed)
    model = DeepEncoder(task.vocab_size, length, d_model, layers, norm_first)
    opt = mt.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    sched = mt.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    mon = GradFlowMonitor(list(model.encoder.layers))
    rng = np.random.default_rng(seed)
    held = np.array(task.sample(np.random.default_rng(10_000 + seed), 256))
    losses, accs = [], []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        loss = reversal_backward(model, opt, task, rng, batch)
        mon.before_step()
        opt.step()
        mon.after_step()
        sched.step()
        losses.append(loss.item())
        if step % max(1, steps // 10) == 0 or step == steps:
            with mt.no_grad():
                accs.append((step, float((model(mt.tensor(held)).numpy().argmax(-1) == held[:, ::-1]).mean())))
    mon.remove()
    return {"norm_first": norm_first, "warmup": warmup, "label": f"{'pre' if norm_first else 'post'}-LN, "
            + (f"warm-up {warmup}" if warmup else "no warm-up"), "loss": losses, "acc": accs,
            "grad_out": mon.grad_out, "grad_param": mon.grad_param, "update_ratio": mon.update_ratio,
            "seconds": time.perf_counter() - t0}


def table(runs: list[dict], first: int) -> str:
    n = len(runs[0]["grad_out"][0])
    lines = [f"| run | ‖∂L/∂out‖ layer 1 / layer {n}, first {first} steps | same, last {first} steps | "
             f"‖∇W‖ layer 1 / layer {n}, first {first} steps | max ‖ΔW‖/‖W‖ (layer, step) | "
             "median ‖ΔW‖/‖W‖ | final loss | held-out token acc. | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        go, gp, ur = (np.array(r[k]) for k in ("grad_out", "grad_param", "update_ratio"))
        early = slice(0, first)
        g_ratio = go[early, 0].mean() / go[early, -1].mean()
        g_late = go[-first:, 0].mean() / go[-first:, -1].mean()
        p_ratio = gp[early, 0].mean() / gp[early, -1].mean()
        s, layer = np.unravel_index(np.argmax(ur), ur.shape)
        lines.append(f"| {r['label']} | {g_ratio:.2f} | {g_late:.2g} | {p_ratio:.2f} | "
                     f"{ur.max():.3g} (layer {layer + 1}, step "
                     f"{s + 1}) | {np.median(ur):.3g} | {np.mean(r['loss'][-10:]):.3f} | {r['acc'][-1][1]:.3f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def heatmap(runs: list[dict], out_dir: str) -> list[str]:
    plt = _pyplot()
    if plt is None:
        return []
    from matplotlib.colors import LogNorm

    rows = (("grad_out", "‖∂L/∂(layer output)‖ (backward hook)"), ("grad_param", "‖∇W‖ of the layer"),
            ("update_ratio", "update/weight ‖ΔW‖/‖W‖"))
    fig, axs = plt.subplots(len(rows), len(runs), figsize=(3.4 * len(runs), 2.7 * len(rows)), squeeze=False,
                            constrained_layout=True)
    for i, (key, title) in enumerate(rows):
        vals = np.concatenate([np.array(r[key]).ravel() for r in runs])
        vals = vals[vals > 0]
        norm = LogNorm(vmin=max(vals.min(), vals.max() * 1e-6), vmax=vals.max()) if vals.size else None
        for j, r in enumerate(runs):
            ax = axs[i][j]
            im = ax.imshow(np.array(r[key]).T, aspect="auto", origin="lower", norm=norm, cmap="magma",
                           extent=(0.5, len(r[key]) + 0.5, 0.5, len(r[key][0]) + 0.5), interpolation="nearest")
            n_layers = len(r[key][0])
            ax.set_yticks(range(1, n_layers + 1, max(1, n_layers // 8)))
            ax.set_title(f"{r['label']}\n{title}", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("step", fontsize=8)
            if j == 0:
                ax.set_ylabel("layer (1 = input side)", fontsize=8)
        fig.colorbar(im, ax=list(axs[i]), shrink=0.9)
    path = os.path.join(out_dir, "gradflow.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps of the warm-up runs")
    p.add_argument("--lr", type=float, default=1e-2, help="peak Adam learning rate (high enough that post-LN "
                   "without warm-up fails)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/gradflow", help="directory for results.json and gradflow.png")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    a = p.parse_args(argv)
    if a.quick:
        a.layers, a.d_model, a.steps, a.warmup = 3, 8, 6, 3
    os.makedirs(a.out, exist_ok=True)
    runs = [run(nf, wu, a.steps, a.layers, a.d_model, a.lr, a.seed)
            for nf in (True, False) for wu in (a.warmup, 0)]
    first = max(1, a.steps // 10)
    text = table(runs, first)
    load = os.getloadavg()
    print(f"{a.layers}-layer encoder, d_model {a.d_model}, peak lr {a.lr}, {a.steps} steps, seed {a.seed}")
    print(text)
    print(f"load average {' '.join(f'{x:.2f}' for x in load)} (the machine is shared)")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"args": vars(a), "runs": runs, "loadavg": load}, f)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text + "\n")
    return {"runs": runs, "table": text, "plots": heatmap(runs, a.out)}


if __name__ == "__main__":
    main()
