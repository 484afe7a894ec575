"""Benchmarks of minitrans.distributed on this machine (one process per rank, MPICH wheel).

    python experiments/bench_distributed.py                 # everything; writes results/distributed.json
    python experiments/bench_distributed.py --only allreduce,w1,comm_only --ranks 1,2,4
    python experiments/bench_distributed.py --only ring --ring-n 32768

Run with plain ``python``: the script starts itself under ``mpiexec -n N python -m mpi4py``
once per part and rank count, and rank 0 of each job reports back as JSON.

* ``allreduce``: median time of ``all_reduce`` (SUM, float32, in place) for 1K-16M floats, at
  each rank count; algorithm bandwidth = bytes / time, bus bandwidth = 2(N-1)/N · bytes / time
  (the bytes each rank moves in a ring all-reduce, the usual way to compare with link speed).
  ``raw`` is mpi4py's ``Allreduce`` on the same buffer, without minitrans's shape check.
* ``w1``: the W1 step (docs/benchmarks.md: DecoderLM vocab 64, d 128, 4 heads, ff 512,
  2 layers, global batch 32 x 64 tokens, Adam 1e-3) under ``DistributedDataParallel`` with the
  global batch split over N ranks; tokens/s of the whole job, and the communication left on
  the step's critical path (starting buckets + waiting for them) as a fraction of the step.
* ``comm_only`` (communication only): the same DDP step on the W1 parameters with the compute
  replaced by a fixed sleep (spread over backward, one sleeping node per parameter), so
  step - sleep is the overhead the framework and MPI add.
* ``ring``: peak traced memory (tracemalloc: NumPy buffers, including the ring's receive
  buffers and exchange scratch; MPI's own C buffers are not traced) per rank of ring attention
  forward + backward at n positions, one head of width 64, float32, against one process
  running the fused attention on the whole sequence; "ratio" is (inputs + peak) per rank over
  the one process's (inputs + peak), 1/N being the ideal.

Each rank runs one thread (NUMBA/OPENBLAS/OMP_NUM_THREADS=1): on a 2-core machine more than 2
ranks share the cores, so W1 scaling is bounded by the cores, not by communication.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = [1 << k for k in range(10, 25, 2)]          # 1K .. 16M floats


# --------------------------------------------------------------------------- workers (under mpiexec)
def _median_time(fn, reps: int, warmup: int = 2) -> float:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    # the slowest rank's time is the collective's time
    return statistics.median(comm.allreduce(t, op=MPI.MAX) for t in ts)


def work_allreduce(args) -> dict:
    import minitrans as mt
    import minitrans.distributed as dist

    dist.init_process_group(backend="mpi")
    n = dist.get_world_size()
    comm = dist.get_comm()
    from mpi4py import MPI

    rows = []
    for size in SIZES:
        t = mt.tensor(np.ones(size, np.float32))
        reps = 20 if size <= 1 << 18 else 5
        sec = _median_time(lambda: dist.all_reduce(t), reps)
        raw = _median_time(lambda: comm.Allreduce(MPI.IN_PLACE, t._data, MPI.SUM), reps)
        nbytes = size * 4
        rows.append({"floats": size, "bytes": nbytes, "ms": sec * 1e3, "raw_ms": raw * 1e3,
                     "algbw_GBs": nbytes / sec / 1e9, "busbw_GBs": 2 * (n - 1) / n * nbytes / sec / 1e9 if n > 1
                     else None})
    return {"ranks": n, "rows": rows}


def _w1_model():
    sys.path.insert(0, str(HERE))
    from bench import W1_BATCH, W1_CFG, W1_SEQ
    from seq2seq import DecoderLM

    return DecoderLM(W1_CFG), W1_CFG, W1_BATCH, W1_SEQ


def _timed_ddp(ddp, timers: dict):
    """Accumulate the time spent starting and waiting for bucket reductions."""
    launch, wait = ddp._launch, ddp._wait

    def timed(fn, key):
        def run(b):
            t0 = time.perf_counter()
            fn(b)
            timers[key] += time.perf_counter() - t0
        return run

    object.__setattr__(ddp, "_launch", timed(launch, "launch"))
    object.__setattr__(ddp, "_wait", timed(wait, "wait"))


def work_w1(args) -> dict:
    import minitrans as mt
    import minitrans.distributed as dist
    import minitrans.nn.functional as F

    dist.init_process_group(backend="mpi")
    n = dist.get_world_size()
    mt.manual_seed(0)
    model, cfg, B, T = _w1_model()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb)
    timers = {"launch": 0.0, "wait": 0.0}
    _timed_ddp(ddp, timers)
    opt = mt.optim.Adam(ddp.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, cfg.vocab_size, (B, T + 1)) for _ in range(4)]

    def step(i):
        local = dist.shard_batch(batches[i % len(batches)])
        logits = ddp(mt.tensor(local[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), mt.tensor(local[:, 1:].reshape(-1)))
        loss.backward()
        opt.step()
        opt.zero_grad()

    comm = dist.get_comm()
    from mpi4py import MPI

    for i in range(args.warmup):
        step(i)
    steps, comm_s = [], []
    for i in range(args.steps):
        timers["launch"] = timers["wait"] = 0.0
        comm.Barrier()
        t0 = time.perf_counter()
        step(i)
        steps.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        comm_s.append(comm.allreduce(timers["launch"] + timers["wait"], op=MPI.MAX))
    ms = statistics.median(steps) * 1e3
    return {"ranks": n, "bucket_mb": args.bucket_mb, "step_ms": ms, "tokens_per_s": B * T / (ms / 1e3), "comm_ms": statistics.median(comm_s) * 1e3,
            "comm_fraction": statistics.median(c / s for c, s in zip(comm_s, steps)),
            "bucket_bytes": ddp.bucket_sizes, "param_bytes": sum(p._data.nbytes for p in model.parameters())}


def work_comm_only(args) -> dict:
    import minitrans as mt
    import minitrans.distributed as dist
    from minitrans.autograd.function import Function

    class Sleep(Function):
        """Identity whose backward sleeps: stands for the compute that produces one gradient."""

        @staticmethod
        def forward(ctx, x, seconds):
            ctx.seconds = seconds
            return x

        @staticmethod
        def backward(ctx, g):
            time.sleep(ctx.seconds)
            return g, None

    dist.init_process_group(backend="mpi")
    n = dist.get_world_size()
    mt.manual_seed(0)
    model, *_ = _w1_model()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb)
    params = list(model.parameters())
    each = args.sleep_ms / 1e3 / len(params)
    comm = dist.get_comm()
    from mpi4py import MPI

    def step():
        loss = None
        for p in params:
            s = Sleep.apply(p, each).sum()
            loss = s if loss is None else loss + s
        loss.backward()
        for p in params:
            p.grad = None

    def timed(sync: bool) -> float:
        comm.Barrier()
        t0 = time.perf_counter()
        if sync:
            step()
        else:
            with ddp.no_sync():                   # the same step without any communication
                step()
        return comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)

    for _ in range(args.warmup):
        step()
    ts, base = [], []
    for _ in range(args.steps):                   # alternate, so that the machine's load hits both alike
        ts.append(timed(True))
        base.append(timed(False))
    ms, bms = statistics.median(ts) * 1e3, statistics.median(base) * 1e3
    return {"ranks": n, "bucket_mb": args.bucket_mb, "sleep_ms": args.sleep_ms, "step_ms": ms, "no_sync_step_ms": bms,
            "overhead_ms": ms - bms, "buckets": len(ddp.bucket_sizes)}


def work_ring(args) -> dict:
    import tracemalloc

    import minitrans as mt
    import minitrans.distributed as dist
    import minitrans.nn.functional as F

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    n_ranks = comm.Get_size()
    n, d = args.ring_n, 64
    rng = np.random.default_rng(0)
    def make(T):
        return [mt.tensor(rng.standard_normal((1, T, d), dtype=np.float32), requires_grad=True) for _ in range(3)]

    if n_ranks == 1:                                  # the single-process reference: fused attention
        def attend(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)
        q, k, v = make(n)
    else:
        dist.init_process_group(backend="mpi")

        def attend(q, k, v):
            return dist.ring_attention(q, k, v, is_causal=args.causal)
        q, k, v = make(n // n_ranks)
    attend(*make(256)).sum().backward()               # compile the tiled kernels before tracing
    run = lambda: attend(q, k, v).sum().backward()    # noqa: E731
    inputs = 3 * q.numel() * 4
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    run()
    sec = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    import resource

    peaks = comm.gather(peak, root=0)
    rss = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, root=0)
    return {"ranks": n_ranks, "n": n, "d": d, "causal": args.causal, "inputs_bytes_per_rank": inputs,
            "peak_traced_bytes_per_rank": max(peaks) if peaks else None, "max_rss_bytes_per_rank": max(rss) if rss
            else None, "fwd_bwd_s": sec}


WORKERS = {"allreduce": work_allreduce, "w1": work_w1, "comm_only": work_comm_only, "ring": work_ring}


# --------------------------------------------------------------------------- driver
def launch(part: str, ranks: int, args, timeout: float) -> dict:
    out = Path(args.out_dir) / f".{part}-{ranks}.json"
    cmd = ["timeout", "-k", "5", str(int(timeout)), str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks),
           sys.executable, "-m", "mpi4py", __file__, "--worker", part, "--json", str(out),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--sleep-ms", str(args.sleep_ms),
           "--ring-n", str(args.ring_n), "--bucket-mb", str(args.bucket_mb)] + (["--causal"] if args.causal else [])
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{part} on {ranks} ranks failed ({p.returncode}):\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    res = json.loads(out.read_text())
    out.unlink()
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="allreduce,w1,comm_only,ring")
    p.add_argument("--ranks", default="1,2,4", help="rank counts for allreduce, w1 and comm_only")
    p.add_argument("--ring-ranks", default="1,2,4")
    p.add_argument("--steps", type=int, default=15, help="timed steps (w1, comm_only)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sleep-ms", type=float, default=100.0, help="the compute a comm_only step stands in for")
    p.add_argument("--ring-n", type=int, default=32768)
    p.add_argument("--bucket-mb", type=float, default=25.0, help="DDP bucket_cap_mb (w1, comm_only)")
    p.add_argument("--causal", action="store_true", help="ring: causal attention")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = WORKERS[args.worker](args)
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == 0:
            Path(args.json).write_text(json.dumps(res))
        return
    os.makedirs(args.out_dir, exist_ok=True)
    parts = args.only.split(",")
    info = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
            "threads_per_rank": 1, "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    results = {"info": info}
    for part in parts:
        counts = [int(x) for x in (args.ring_ranks if part == "ring" else args.ranks).split(",")]
        if part == "allreduce":
            counts = [c for c in counts if c > 1]
        results[part] = []
        for c in counts:
            res = launch(part, c, args, timeout=1800)
            results[part].append(res)
            print(part, c, json.dumps({k: v for k, v in res.items() if k not in ("rows", "bucket_bytes")}),
                  flush=True)
    path = Path(args.out_dir) / "distributed.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(results)
    path.write_text(json.dumps(old, indent=1))
    print(markdown(old))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table (and the blank line after it) of ``header`` and ``rows`` of cells."""
    return (["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
            + ["| " + " | ".join(row) + " |" for row in rows] + [""])


def markdown(res: dict) -> str:
    lines = []
    if res.get("allreduce"):
        header = ["floats"] + [f"N={x['ranks']} {what}" for x in res["allreduce"] for what in ("ms (raw)", "bus GB/s")]
        rows = []
        for i, size in enumerate(SIZES):
            cells = [f"{size:,}"]
            for x in res["allreduce"]:
                rw = x["rows"][i]
                cells += [f"{rw['ms']:.3g} ({rw['raw_ms']:.3g})", f"{rw['busbw_GBs']:.3g}"]
            rows.append(cells)
        lines += _table(header, rows)
    if res.get("w1"):
        lines += _table(["ranks", "W1 step ms", "tokens/s", "comm ms on the critical path", "comm fraction"],
                        [[f"{x['ranks']}", f"{x['step_ms']:.1f}", f"{x['tokens_per_s']:.0f}", f"{x['comm_ms']:.2f}",
                          f"{x['comm_fraction']:.1%}"] for x in res["w1"]])
    if res.get("comm_only"):
        lines += _table(["ranks", "sleep ms", "DDP step ms", "same step, no_sync", "overhead ms", "buckets"],
                        [[f"{x['ranks']}", f"{x['sleep_ms']:.0f}", f"{x['step_ms']:.1f}", f"{x['no_sync_step_ms']:.1f}",
                          f"{x['overhead_ms']:.2f}", f"{x['buckets']}"] for x in res["comm_only"]])
    if res.get("ring"):
        def held(x):
            return x["inputs_bytes_per_rank"] + x["peak_traced_bytes_per_rank"]
        one = next((held(x) for x in res["ring"] if x["ranks"] == 1), None)
        lines += _table(["ranks", "n", "inputs MB/rank", "peak traced MB/rank", "inputs + peak MB/rank",
                         "ratio to 1 process (x N)", "max RSS MB/rank", "fwd+bwd s"],
                        [[f"{x['ranks']}", f"{x['n']:,}", f"{x['inputs_bytes_per_rank'] / 2**20:.1f}",
                          f"{x['peak_traced_bytes_per_rank'] / 2**20:.1f}", f"{held(x) / 2**20:.1f}",
                          "" if one is None else f"{held(x) / one:.2f} ({held(x) / one * x['ranks']:.2f})",
                          f"{x['max_rss_bytes_per_rank'] / 2**20:.0f}", f"{x['fwd_bwd_s']:.1f}"] for x in res["ring"]])
    return "\n".join(lines).rstrip("\n")


if __name__ == "__main__":
    main()
