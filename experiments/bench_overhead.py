"""W5 op overhead: a chain of elementwise ops on a 1-element tensor with grad, then backward.

Reports µs per op (forward + backward, the chain's time divided by its length), the median
over repeats after warm-up, for minitrans and, when it is installed, PyTorch in the same run
with the same thread count; writes the figures as JSON. Beside the wall-clock figure it gives the
process's CPU time per op, which a machine shared with other jobs disturbs much less (a one-element
op runs on one thread on both sides, so CPU time and wall time agree on a quiet machine).
``python experiments/bench.py --only W5`` measures the same chain with each framework in its own process.

    python experiments/bench_overhead.py --ops 1000 --repeats 30
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
from tqdm import tqdm

import minitrans as mt


def chain(x, n_ops: int):
    """The W5 chain: alternating add, mul, sub, div by constants (values stay near x)."""
    y = x
    for i in range(n_ops):
        k = i % 4
        if k == 0:
            y = y + 0.5
        elif k == 1:
            y = y * 1.0001
        elif k == 2:
            y = y - 0.5
        else:
            y = y / 1.0001
    return y.sum()


def _one_run(make_leaf, n_ops: int) -> tuple:
    """(wall seconds, process CPU seconds) of one chain, forward and backward."""
    x = make_leaf()
    c0 = time.process_time()
    t0 = time.perf_counter()
    chain(x, n_ops).backward()
    return time.perf_counter() - t0, time.process_time() - c0


def time_interleaved(sides: dict, n_ops: int, warmup: int, repeats: int, cpu: dict | None = None) -> dict:
    """Wall seconds per chain (forward + backward) for each side, the sides alternating run by run so
    that both see the same machine load; warm-up runs are not kept. Given a dict ``cpu``, the process
    CPU seconds of the same runs are put in it, per side."""
    times = {name: [] for name in sides}
    cpu_times = {name: [] for name in sides}
    for r in tqdm(range(warmup + repeats), desc="W5 chains", unit="round"):
        for name, make_leaf in sides.items():
            wall, cpu_s = _one_run(make_leaf, n_ops)
            if r >= warmup:
                times[name].append(wall)
                cpu_times[name].append(cpu_s)
    if cpu is not None:
        cpu.update(cpu_times)
    return times


def final_grad(make_leaf, n_ops: int) -> float:
    x = make_leaf()
    chain(x, n_ops).backward()
    return float(x.grad.item())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=1000, help="length of the op chain")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    p.add_argument("--repeats", type=int, default=30, help="timed runs; the median is reported")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for both sides (PyTorch intra-op; minitrans is single-threaded per op here)")
    p.add_argument("--out", default="experiments/results/bench_overhead.json")
    args = p.parse_args()

    sides = {"minitrans": lambda: mt.tensor([1.5], requires_grad=True)}
    try:
        import torch

        torch.set_num_threads(args.threads)
        sides["torch"] = lambda: torch.tensor([1.5], requires_grad=True)
    except ImportError:
        torch = None
    cpu: dict = {}
    times = time_interleaved(sides, args.ops, args.warmup, args.repeats, cpu)
    us = {name: statistics.median(ts) / args.ops * 1e6 for name, ts in times.items()}
    cpu_us = {name: statistics.median(ts) / args.ops * 1e6 for name, ts in cpu.items()}
    result = {
        "workload": "W5 op overhead", "ops": args.ops, "warmup": args.warmup, "repeats": args.repeats,
        "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(), "numpy": np.__version__,
        "minitrans_us_per_op": us["minitrans"], "minitrans_runs_s": times["minitrans"],
        "minitrans_cpu_us_per_op": cpu_us["minitrans"], "minitrans_cpu_runs_s": cpu["minitrans"],
    }
    rows = [("minitrans", us["minitrans"], min(times["minitrans"]) / args.ops * 1e6, cpu_us["minitrans"])]
    tr = torch is not None
    if tr:
        mt_grad, t_grad = final_grad(sides["minitrans"], args.ops), final_grad(sides["torch"], args.ops)
        assert abs(t_grad - mt_grad) <= 1e-4 * abs(t_grad), (t_grad, mt_grad)  # same computation on both sides
        result.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                      torch_us_per_op=us["torch"], torch_runs_s=times["torch"],
                      torch_cpu_us_per_op=cpu_us["torch"], torch_cpu_runs_s=cpu["torch"],
                      ratio_minitrans_over_torch=us["minitrans"] / us["torch"],
                      cpu_ratio_minitrans_over_torch=cpu_us["minitrans"] / cpu_us["torch"])
        rows.append((f"torch {torch.__version__}", us["torch"], min(times["torch"]) / args.ops * 1e6,
                     cpu_us["torch"]))

    print(f"W5 op overhead: chain of {args.ops} elementwise ops on a 1-element tensor, forward + backward; "
          f"median of {args.repeats} after {args.warmup} warm-up; threads {args.threads}")
    print(f"{'':<22}{'median µs/op':>14}{'best µs/op':>12}{'median CPU µs/op':>18}")
    for name, med, best, cpu_med in rows:
        print(f"{name:<22}{med:>14.2f}{best:>12.2f}{cpu_med:>18.2f}")
    if tr:
        print(f"{'ratio minitrans/torch':<22}{result['ratio_minitrans_over_torch']:>14.2f}{'':>12}"
              f"{result['cpu_ratio_minitrans_over_torch']:>18.2f}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
