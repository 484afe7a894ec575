"""Benchmark the Numba CPU kernels (docs/benchmarks.md workloads W2, W4, W6).

W2  attention forward + backward, batch 1, 8 heads, head dim 64, n in {512, 2048, 8192},
    causal and not: median ms, ratio to torch's scaled_dot_product_attention
    (or to the NumPy reference when torch does not import; n <= 2048 only, it is O(n^2)).
W4  softmax forward + backward on 4096 x 4096: median ms, GB/s (bytes read + written once),
    ratio to torch.softmax (or the NumPy reference).
W6  peak memory above the inputs (tracemalloc) of attention forward + backward, one head,
    head dim 64, n in {1024, 4096, 16384, 32768}: must grow linearly in n.

Ours and the peer are timed alternately in the same process, float32, after one warm-up
each (which also pays Numba's compile), with OpenBLAS on one thread so that the tiled attention
runs its tiles on minitrans's threads. Ratio = ours / peer (< 1 means we are faster).

    python experiments/bench_kernels_cpu.py --quick
    python experiments/bench_kernels_cpu.py --out experiments/results/bench_kernels_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minitrans import threads
from minitrans.kernels import cpu, reference

try:
    import torch
except ImportError:  # the NumPy reference is the peer then
    torch = None


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _race(ours, peer, reps: int) -> tuple[float, float | None]:
    """Median ms of ours and peer, run alternately after one warm-up each."""
    ours()
    if peer is not None:
        peer()
    a, b = [], []
    for _ in range(reps):
        a.append(_timed(ours))
        if peer is not None:
            b.append(_timed(peer))
    return float(np.median(a)), (float(np.median(b)) if b else None)


def _attention_pair(n: int, heads: int, d: int, causal: bool, rng):
    q, k, v, do = (rng.standard_normal((heads, n, d)).astype(np.float32) for _ in range(4))
    scale = 1.0 / np.sqrt(d)

    def ours():
        o, lse = cpu.attention_forward(q, k, v, None, causal, scale)
        cpu.attention_backward(q, k, v, o, lse, do, None, causal, scale)

    if torch is not None:
        tq, tk, tv = (torch.from_numpy(a[None].copy()).requires_grad_() for a in (q, k, v))
        tdo = torch.from_numpy(do[None].copy())

        def peer():
            for t in (tq, tk, tv):
                t.grad = None
            o = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
            o.backward(tdo)
    elif n <= 2048:
        def peer():
            o, lse = reference.attention_forward(q, k, v, None, causal, scale)
            reference.attention_backward(q, k, v, o, lse, do, None, causal, scale)
    else:
        peer = None
    return ours, peer


def bench_w2(ns, reps: int, rng) -> list[dict]:
    rows = []
    for n in tqdm(ns, desc="W2 attention", leave=False):
        for causal in (False, True):
            ours, peer = _attention_pair(n, 8, 64, causal, rng)
            r = max(2, reps if n <= 2048 else reps // 2)
            ms, peer_ms = _race(ours, peer, r)
            rows.append(dict(workload="W2", n=n, heads=8, d=64, causal=causal, ms=ms,
                             peer_ms=peer_ms, ratio=(ms / peer_ms if peer_ms else None), reps=r))
    return rows


def bench_w4(reps: int, rng, n: int = 4096) -> dict:
    x = rng.standard_normal((n, n)).astype(np.float32)
    dy = rng.standard_normal((n, n)).astype(np.float32)

    def ours():
        cpu.softmax_backward(cpu.softmax_forward(x), dy)

    if torch is not None:
        tx = torch.from_numpy(x.copy()).requires_grad_()
        tdy = torch.from_numpy(dy.copy())

        def peer():
            tx.grad = None
            torch.softmax(tx, -1).backward(tdy)
    else:
        def peer():
            reference.softmax_backward(reference.softmax_forward(x), dy)
    ms, peer_ms = _race(ours, peer, reps)
    gbytes = 5 * x.nbytes / 1e9          # fwd: read x, write y; bwd: read y, dy, write dx
    return dict(workload="W4", shape=[n, n], ms=ms, peer_ms=peer_ms,
                ratio=ms / peer_ms, gb_s=gbytes / (ms / 1e3), peer_gb_s=gbytes / (peer_ms / 1e3))


def peak_memory(n: int, heads: int, causal: bool, rng) -> tuple[float, float]:
    """(peak MiB above the inputs, ms) of one attention forward + backward (tracemalloc)."""
    q, k, v, do = (rng.standard_normal((heads, n, 64)).astype(np.float32) for _ in range(4))
    scale = 0.125
    warm = [np.ascontiguousarray(a[:, :64]) for a in (q, k, v)]
    cpu.attention_forward(*warm, None, causal, scale)  # compiled
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    o, lse = cpu.attention_forward(q, k, v, None, causal, scale)
    grads = cpu.attention_backward(q, k, v, o, lse, do, None, causal, scale)
    ms = (time.perf_counter() - t0) * 1e3
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del o, lse, grads
    return peak / 2**20, ms


def bench_w6(ns, rng) -> list[dict]:
    rows = []
    for n in tqdm(ns, desc="W6 memory", leave=False):
        peak_mib, ms = peak_memory(n, 1, False, rng)
        rows.append(dict(workload="W6", n=n, heads=1, d=64, peak_mib=peak_mib,
                         peak_bytes_per_n=peak_mib * 2**20 / n, ms=ms,
                         n2_matrix_mib=4 * n * n / 2**20))
    return rows


def _print_table(res: dict) -> None:
    peer = res["peer"]
    print(f"\nthreads: numba {res['numba_threads']}, torch {res['torch_threads']}, cpus {res['cpu_count']}")
    print(f"\n{'W2 attention fwd+bwd':<26}{'ms':>10}{peer + ' ms':>14}{'ratio':>8}")
    for r in res["W2"]:
        label = f"n={r['n']} {'causal' if r['causal'] else 'full'}"
        pm = f"{r['peer_ms']:.1f}" if r["peer_ms"] else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(f"{label:<26}{r['ms']:>10.1f}{pm:>14}{ratio:>8}")
    w4 = res["W4"]
    print(f"\nW4 softmax {w4['shape'][0]}^2 fwd+bwd: {w4['ms']:.1f} ms ({w4['gb_s']:.1f} GB/s), "
          f"{peer} {w4['peer_ms']:.1f} ms ({w4['peer_gb_s']:.1f} GB/s), ratio {w4['ratio']:.2f}")
    print(f"\n{'W6 n':<10}{'peak MiB':>10}{'bytes/n':>10}{'ms':>10}{'n^2 f32 MiB':>14}")
    for r in res["W6"]:
        print(f"{r['n']:<10}{r['peak_mib']:>10.1f}{r['peak_bytes_per_n']:>10.0f}{r['ms']:>10.1f}"
              f"{r['n2_matrix_mib']:>14.0f}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n in {512, 2048} for W2, no n=32768 in W6")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per measurement")
    ap.add_argument("--out", default="experiments/results/bench_kernels_cpu.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    # the tiled attention splits its tiles over minitrans's threads only with OpenBLAS on one thread
    # (docs/performance.md); torch's own pool is unaffected
    threads.set_blas_num_threads(1)
    res = dict(
        peer="torch" if torch is not None else "numpy-reference",
        torch_version=getattr(torch, "__version__", None),
        numba_threads=threads.get_num_threads(), blas_threads=threads.get_blas_num_threads(),
        torch_threads=torch.get_num_threads() if torch is not None else None,
        cpu_count=os.cpu_count(), machine=platform.machine(), processor=platform.processor(),
        quick=args.quick, dtype="float32",
    )
    res["W2"] = bench_w2([512, 2048] if args.quick else [512, 2048, 8192], args.reps, rng)
    res["W4"] = bench_w4(args.reps, rng)
    res["W6"] = bench_w6([1024, 4096, 16384] if args.quick else [1024, 4096, 16384, 32768], rng)
    _print_table(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {out}")
    return res


if __name__ == "__main__":
    main()
