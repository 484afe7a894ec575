"""Generation speed: time per new token against context length, with and without the key/value cache,
and PyTorch generating from the same weights with its own cached loop.

    python experiments/bench_generate.py                    # contexts 64 ... 2048, 1 thread
    python experiments/bench_generate.py --quick            # 64 and 512 only

For each context length L a random-weight GPT (sinusoidal positions, pre-LN) is given an L-token
prompt; the cached figure is the time of --new greedy steps after the prompt (one query row each,
against a cache of about L keys; the prompt's cache is built once, untimed, and each repetition
continues its own copy of it, also made untimed) divided by --new; the uncached figure recomputes
the whole L-token context for one step. Under no_grad minitrans's cached steps run the layers on
arrays (minitrans.nn.incremental: one Numba call per layer, the cache read in place). The PyTorch side is a
hand-written cached loop over the same weights (torch.nn.functional.scaled_dot_product_attention
on the cached keys/values), first checked to give the same logits. minitrans and torch run with the same thread count and take
turns (A/B/A/B); figures are medians, with the best repetition beside them (on a loaded machine
the minimum is the steadier estimate); the load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np

import minitrans as mt
from minitrans.models import GPT, GPTConfig

from bench import loadavg, machine_info   # same directory: run as a script

try:
    import torch
except ImportError:                   # the `bench` extra is not installed: no peer
    torch = None


def set_threads(n: int) -> int:
    """The same thread count for minitrans (Numba + BLAS, through minitrans.threads) and torch."""
    mt.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    return n


def interleave(sides: dict, warmup: int, reps: int) -> dict:
    """Seconds per call of each side, the sides taking turns (A/B/A/B) ``reps`` times after ``warmup`` turns.

    A side is ``fn`` (timed) or ``(setup, fn)``: ``fn(setup())`` with only ``fn`` timed.
    Both libraries share this process (the cache loop needs the same weights in memory), so the
    runs use one thread per side, where the two thread pools cannot take cores from each other."""
    times = {name: [] for name in sides}
    for r in range(warmup + reps):
        for name, side in sides.items():
            setup, fn = side if isinstance(side, tuple) else (None, side)
            args = () if setup is None else (setup(),)
            t0 = time.perf_counter()
            fn(*args)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def torch_generator(model: GPT):
    """A cached greedy step in PyTorch over ``model``'s weights: step(ids (1, T)) -> next-token logits."""
    from torch.nn.functional import embedding, layer_norm, linear, relu, scaled_dot_product_attention

    sd = {k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()}
    c = model.config
    H, E = c.n_head, c.n_embd
    pe = torch.from_numpy(model.pos.pe.numpy().copy())

    def block(x, i, cache):
        p = f"blocks.layers.{i}."
        a = layer_norm(x, (E,), sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        q, k, v = linear(a, sd[p + "self_attn.in_proj_weight"], sd[p + "self_attn.in_proj_bias"]).chunk(3, -1)
        B, T, _ = q.shape
        q, k, v = (t.view(B, T, H, E // H).transpose(1, 2) for t in (q, k, v))          # (B, H, T, hd)
        if cache[i] is not None:
            k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
        cache[i] = (k, v)
        o = scaled_dot_product_attention(q, k, v, is_causal=T > 1)   # one new row sees every cached key
        x = x + linear(o.transpose(1, 2).reshape(B, T, E), sd[p + "self_attn.out_proj.weight"],
                       sd[p + "self_attn.out_proj.bias"])
        f = layer_norm(x, (E,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        f = linear(relu(linear(f, sd[p + "linear1.weight"], sd[p + "linear1.bias"])),
                   sd[p + "linear2.weight"], sd[p + "linear2.bias"])
        return x + f

    @torch.no_grad()
    def run(ids: np.ndarray, cache: list, past: int) -> torch.Tensor:
        x = embedding(torch.from_numpy(ids), sd["embed.weight"]) * math.sqrt(E) + pe[past:past + ids.shape[1]]
        for i in range(c.n_layer):
            x = block(x, i, cache)
        x = layer_norm(x, (E,), sd["blocks.norm.weight"], sd["blocks.norm.bias"])
        return linear(x[:, -1], sd["head.weight"], sd["head.bias"])

    return run


def bench_context(model: GPT, L: int, new: int, reps: int, rng) -> dict:
    """Time --new greedy steps from an L-token prompt whose cache was built once, untimed. Each
    repetition continues its own copy of that cache, made untimed before it: minitrans appends a
    step's keys/values in place into spare capacity, and a second continuation of one cache copies
    it first (so that the first stays valid); the copy belongs to the setup, not to the steps."""
    prompt = rng.integers(0, model.config.vocab_size, (1, L))
    x = mt.tensor(prompt)
    with mt.no_grad():
        logits0, cache0 = model(x, use_cache=True)
    rows = mt.tensor(np.arange(prompt.shape[0]))

    def fresh_cache():
        return cache0.reorder(rows)                               # every row, in order: a copy

    def mt_cached(start=None, keep=None):
        logits, cache = logits0, cache0 if start is None else start
        for _ in range(new):
            nxt = mt.tensor(logits[:, -1].numpy().argmax(-1)[:, None])
            logits, cache = model(nxt, past_key_values=cache, use_cache=True)
            if keep is not None:
                keep.append(logits[:, -1].numpy())

    def mt_uncached():
        model(x)[:, -1].numpy()

    sides = {"cached": (fresh_cache, mt_cached), "uncached": mt_uncached}
    check = None
    if torch is not None:
        run = torch_generator(model)
        tcache0 = [None] * model.config.n_layer
        tlogits0 = run(prompt, tcache0, 0)

        def torch_cached(keep=None):
            logits, cache = tlogits0, list(tcache0)
            for t in range(new):
                nxt = logits.argmax(-1, keepdim=True).numpy()
                logits = run(nxt, cache, L + t)
                if keep is not None:
                    keep.append(logits.numpy())

        kept, ours = [], []
        torch_cached(kept)
        with mt.no_grad():
            mt_cached(fresh_cache(), ours)
        check = float(np.max(np.abs(np.concatenate(kept) - np.concatenate(ours))))
        sides["torch_cached"] = torch_cached
    with mt.no_grad():
        times = interleave(sides, warmup=1, reps=reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}                   # less sensitive to the machine's load
    out = {"context": L, "new_tokens": new, "logits_max_abs_diff_vs_torch": check,
           "cached_ms_per_token": 1e3 * med["cached"] / new, "uncached_ms_per_token": 1e3 * med["uncached"],
           "cached_best_ms_per_token": 1e3 * best["cached"] / new, "loadavg": os.getloadavg()[0]}
    if torch is not None:
        out["torch_cached_ms_per_token"] = 1e3 * med["torch_cached"] / new
        out["torch_cached_best_ms_per_token"] = 1e3 * best["torch_cached"] / new
        out["ratio_vs_torch"] = out["cached_ms_per_token"] / out["torch_cached_ms_per_token"]
        out["ratio_vs_torch_best"] = out["cached_best_ms_per_token"] / out["torch_cached_best_ms_per_token"]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contexts", default="64,128,256,512,1024,2048")
    ap.add_argument("--quick", action="store_true", help="contexts 64 and 512, fewer repetitions")
    ap.add_argument("--new", type=int, default=16, help="tokens generated after the prompt")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="threads for both sides (Numba, OpenBLAS, torch)")
    ap.add_argument("--out", default="experiments/results/bench_generate.json")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    contexts = [64, 512] if args.quick else [int(c) for c in args.contexts.split(",")]
    mt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=args.vocab, block_size=max(contexts) + args.new + 1, n_layer=args.layers,
                          n_head=args.heads, n_embd=args.d_model, norm_first=True)).eval()
    rng = np.random.default_rng(0)
    rows = []
    for L in contexts:
        rows.append(bench_context(model, L, args.new, 3 if args.quick else args.reps, rng))
        r = rows[-1]
        print(f"context {L:>5}: cached {r['cached_ms_per_token']:7.2f} ms/token "
              f"(best {r['cached_best_ms_per_token']:6.2f})"
              f"   uncached {r['uncached_ms_per_token']:8.2f} ms/token" + (
                  f"   torch cached {r['torch_cached_ms_per_token']:6.2f} "
                  f"(best {r['torch_cached_best_ms_per_token']:6.2f})"
                  f"   minitrans/torch {r['ratio_vs_torch']:.2f} (best {r['ratio_vs_torch_best']:.2f})"
                  f"   logits |diff| {r['logits_max_abs_diff_vs_torch']:.1e}" if torch is not None else "")
              + f"   load {r['loadavg']:.1f}", flush=True)
    info = dict(machine_info(threads, mt.threading_layer() or "default"), loadavg=loadavg())
    first, last = rows[0], rows[-1]
    summary = {"cached_growth": last["cached_ms_per_token"] / first["cached_ms_per_token"],
               "cached_growth_best": last["cached_best_ms_per_token"] / first["cached_best_ms_per_token"],
               "contexts": [first["context"], last["context"]]}
    print(f"cached per-token time at {last['context']} / at {first['context']}: {summary['cached_growth']:.2f}x "
          f"(best-of: {summary['cached_growth_best']:.2f}x; target <= 3); load average {info['loadavg']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"info": info, "model": vars(args), "rows": rows, "summary": summary}
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
