"""The benchmark suite: BENCHMARK.md workloads W1–W6, minitrans against PyTorch in the same run.

W1 toy-LM training step (DecoderLM of seq2seq.py; the torch twin gets minitrans's initial weights
through the state dict), W2 attention, W3 matmul, W4 softmax, W5 op overhead, W6 attention memory.
W2/W4/W6 reuse bench_kernels_cpu.py and W5 bench_overhead.py. Both sides run with the same thread
count and alternate repetition by repetition (A/B/A/B: the machine is shared and noisy); figures
are medians; ratio = minitrans time / peer time (< 1: minitrans faster). Writes JSON and the
section between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` of experiments/RESULTS.md.

    python experiments/bench.py --quick          # reduced set, under a minute
    python experiments/bench.py --only W1,W3
    python experiments/bench.py --profile-w1     # cProfile of 10 W1 steps -> results/w1_profile.txt
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from tqdm import tqdm

import minitrans as mt

import bench_kernels_cpu as kern      # W2, W4, W6 (same directory: run as a script)
import bench_overhead as ovh          # W5
from seq2seq import DecoderLM, LMConfig, loss_fn

try:
    import torch
except ImportError:                   # the `bench` extra is not installed: NumPy is the only peer
    torch = None

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


# --------------------------------------------------------------------------- machine and timing
def _openblas_call(what: str, *args):
    """Call ``openblas_{what}`` in the OpenBLAS that NumPy loaded (found in /proc/self/maps); None if absent."""
    try:
        libs = sorted({ln.split()[-1] for ln in open("/proc/self/maps") if "openblas" in ln.lower()})
    except OSError:
        return None
    for path in libs:
        lib = ctypes.CDLL(path)
        for sym in (f"scipy_openblas_{what}64_", f"openblas_{what}64_", f"openblas_{what}"):
            if hasattr(lib, sym):
                return getattr(lib, sym)(*args)
    return None


def set_threads(n: int) -> int:
    """The same thread count for Numba, NumPy's OpenBLAS and torch (intra-op)."""
    numba.set_num_threads(n)
    _openblas_call("set_num_threads", n)
    if torch is not None:
        torch.set_num_threads(n)
    return n


def machine_info(threads: int) -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    return dict(cpu=model, cores=os.cpu_count(), threads=threads, numba_threads=numba.get_num_threads(),
                openblas_threads=_openblas_call("get_num_threads"),
                torch_threads=torch.get_num_threads() if torch else None,
                python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
                torch=getattr(torch, "__version__", None), minitrans=mt.__version__,
                date=datetime.datetime.now().isoformat(timespec="seconds"),
                loadavg=" ".join(f"{x:.2f}" for x in os.getloadavg()),
                command="python " + shlex.join(sys.argv))


def interleave(sides: dict, warmup: int, reps: int, block: int = 1) -> dict:
    """Seconds per call of each side, the sides taking turns (A/B/A/B) ``reps`` times after ``warmup``
    untimed turns. With ``block`` > 1 a turn is ``block`` calls and its first call is not kept: it
    absorbs the hand-over between thread pools (torch's OpenMP threads spin for a while after each
    parallel region and slow down an OpenBLAS call that follows at once, and vice versa)."""
    times = {name: [] for name in sides}
    for r in range(warmup + reps):
        for name, fn in sides.items():
            for j in range(block):
                t0 = time.perf_counter()
                fn()
                if r >= warmup and (j > 0 or block == 1):
                    times[name].append(time.perf_counter() - t0)
    return times


def row(workload, case, metric, ours, peer_name=None, peer=None, ratio=None, note="") -> dict:
    return dict(workload=workload, case=case, metric=metric, minitrans=ours, peer_name=peer_name,
                peer=peer, ratio=ratio, note=note)


# --------------------------------------------------------------------------- W1 toy-LM step
W1_CFG = LMConfig(vocab_size=64, d_model=128, nhead=4, num_layers=2, dim_feedforward=512, dropout=0.0, max_len=64)
W1_BATCH, W1_SEQ = 32, 64


def torch_twin(model: DecoderLM):
    """DecoderLM written with torch.nn (same state-dict keys), loaded with ``model``'s weights."""
    nn, cfg = torch.nn, model.cfg

    class TorchDecoderLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.register_buffer("pe", torch.from_numpy(model.pos.pe.numpy().copy()), persistent=False)
            layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout,
                                               batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, nn.LayerNorm(cfg.d_model),
                                                enable_nested_tensor=False)
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

        def forward(self, x):
            T = x.shape[1]
            h = self.embed(x) * math.sqrt(cfg.d_model) + self.pe[:T]          # (B, T, C)
            mask = nn.Transformer.generate_square_subsequent_mask(T)
            return self.head(self.blocks(h, mask=mask, is_causal=True))      # (B, T, vocab)

    twin = TorchDecoderLM()
    twin.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
    return twin


def w1_steps(seed: int, n_batches: int = 8):
    """Step functions (forward + backward + Adam step + zero_grad) returning the loss, per side."""
    mt.manual_seed(seed)
    model = DecoderLM(W1_CFG)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, W1_CFG.vocab_size, (n_batches, W1_BATCH, W1_SEQ + 1))
    xs, ys = tokens[:, :, :-1], tokens[:, :, 1:]         # next-token prediction
    mx = [mt.tensor(x) for x in xs]
    opt = mt.optim.Adam(model.parameters(), lr=1e-3)
    it = {"minitrans": 0, "torch": 0}

    def mt_step():
        i = it["minitrans"] % n_batches
        it["minitrans"] += 1
        loss = loss_fn(model(mx[i]), ys[i], ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    sides = {"minitrans": mt_step}
    if torch is not None:
        twin = torch_twin(model)
        topt = torch.optim.Adam(twin.parameters(), lr=1e-3)
        tx, ty = torch.from_numpy(xs.copy()), torch.from_numpy(ys.copy())

        def torch_step():
            i = it["torch"] % n_batches
            it["torch"] += 1
            loss = torch.nn.functional.cross_entropy(twin(tx[i]).reshape(-1, W1_CFG.vocab_size), ty[i].reshape(-1))
            loss.backward()
            topt.step()
            topt.zero_grad()
            return loss

        sides["torch"] = torch_step
    return sides


def bench_w1(warmup: int, steps: int, seed: int) -> tuple[list, dict]:
    sides = w1_steps(seed)
    # the check: the first two steps on both sides (before and after one Adam update) give the same loss
    losses = {name: [float(fn().item()) for _ in range(2)] for name, fn in sides.items()}
    times = interleave(sides, max(warmup - 2, 0), steps)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    tok = W1_BATCH * W1_SEQ
    raw = dict(warmup=warmup, steps=steps, batch=W1_BATCH, seq=W1_SEQ, losses=losses, step_ms=times)
    rows = [row("W1 toy-LM step", f"B{W1_BATCH}xT{W1_SEQ}, 2 layers", "ms/step", ms["minitrans"])]
    if "torch" in ms:
        d0, d1 = (abs(losses["minitrans"][i] - losses["torch"][i]) for i in range(2))
        raw["check"] = dict(first_loss_abs_diff=d0, second_loss_abs_diff=d1, tol=1e-4, ok=d0 <= 1e-4)
        r = ms["minitrans"] / ms["torch"]
        rows = [row("W1 toy-LM step", f"B{W1_BATCH}xT{W1_SEQ}, 2 layers", "ms/step", ms["minitrans"], "torch",
                    ms["torch"], r),
                row("W1 toy-LM step", "throughput", "tokens/s", tok / ms["minitrans"] * 1e3, "torch",
                    tok / ms["torch"] * 1e3, r)]
    else:
        rows.append(row("W1 toy-LM step", "throughput", "tokens/s", tok / ms["minitrans"] * 1e3))
    return rows, raw


# --------------------------------------------------------------------------- W2..W6
def bench_w2(ns, reps: int, rng) -> tuple[list, list]:
    raw = kern.bench_w2(ns, reps, rng)
    peer = "torch sdpa" if torch is not None else "numpy reference"
    rows = [row("W2 attention", f"n={r['n']} {'causal' if r['causal'] else 'full'}", "ms fwd+bwd", r["ms"],
                peer, r["peer_ms"], r["ratio"], "B1 H8 d64") for r in raw]
    for n in ns:          # peak memory above the inputs (torch's allocations are invisible to tracemalloc)
        for causal in (False, True):
            mib, _ = kern.peak_memory(n, 8, causal, rng)
            rows.append(row("W2 attention", f"n={n} {'causal' if causal else 'full'}", "peak MiB above inputs",
                            mib, note=f"B1 H8 d64; an n^2 f32 score matrix per head: {4 * n * n / 2**20:.0f} MiB"))
    return rows, raw


def bench_w3(ns, rng) -> tuple[list, list]:
    rows, raw = [], []
    for n in tqdm(ns, desc="W3 matmul", leave=False):
        a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        ma, mb = mt.tensor(a), mt.tensor(b)
        sides = {"minitrans": lambda: ma @ mb, "numpy": lambda: a @ b}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            sides["torch"] = lambda: ta @ tb
        reps = 15 if n <= 256 else 5 if n <= 1024 else 3
        times = interleave(sides, 1, reps, block=3 if n <= 1024 else 2)
        gf = {k: 2 * n ** 3 / statistics.median(v) / 1e9 for k, v in times.items()}
        raw.append(dict(n=n, reps=reps, gflops=gf, times_s=times))
        for peer in [k for k in gf if k != "minitrans"]:
            rows.append(row("W3 matmul", f"n={n}", "GFLOP/s", gf["minitrans"], peer, gf[peer],
                            gf[peer] / gf["minitrans"], "mt: a @ b incl. Tensor overhead"))
    return rows, raw


def bench_w4(n: int, reps: int, rng) -> tuple[list, dict]:
    r = kern.bench_w4(reps, rng, n)
    peer = "torch" if torch is not None else "numpy reference"
    return [row("W4 softmax", f"{n}x{n} fwd+bwd", "GB/s", r["gb_s"], peer, r["peer_gb_s"], r["ratio"],
                f"{r['ms']:.1f} ms vs {r['peer_ms']:.1f} ms")], r


def bench_w5(n_ops: int, warmup: int, repeats: int) -> tuple[list, dict]:
    sides = {"minitrans": lambda: mt.tensor([1.5], requires_grad=True)}
    if torch is not None:
        sides["torch"] = lambda: torch.tensor([1.5], requires_grad=True)
    times = ovh.time_interleaved(sides, n_ops, warmup, repeats)
    us = {k: statistics.median(v) / n_ops * 1e6 for k, v in times.items()}
    raw = dict(ops=n_ops, warmup=warmup, repeats=repeats, us_per_op=us, runs_s=times)
    if torch is not None:
        g = {k: ovh.final_grad(f, n_ops) for k, f in sides.items()}
        raw["grad_check"] = g
        return [row("W5 op overhead", f"chain of {n_ops}", "µs/op fwd+bwd", us["minitrans"], "torch", us["torch"],
                    us["minitrans"] / us["torch"])], raw
    return [row("W5 op overhead", f"chain of {n_ops}", "µs/op fwd+bwd", us["minitrans"])], raw


def bench_w6(ns, rng) -> tuple[list, dict]:
    raw = kern.bench_w6(ns, rng)
    rows = [row("W6 attention memory", f"n={r['n']}", "peak MiB", r["peak_mib"],
                note=f"{r['peak_bytes_per_n']:.0f} B/n; an n^2 f32 matrix: {r['n2_matrix_mib']:.0f} MiB")
            for r in raw]
    slope = float(np.polyfit(np.log([r["n"] for r in raw]), np.log([r["peak_mib"] for r in raw]), 1)[0])
    rows.append(row("W6 attention memory", f"n={raw[0]['n']}..{raw[-1]['n']}", "log-log slope", slope,
                    note="1 = linear in n (tiled), 2 = quadratic"))
    return rows, dict(rows=raw, loglog_slope=slope)


# --------------------------------------------------------------------------- reporting
def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def print_table(rows: list, info: dict) -> None:
    print(f"\n{info['cpu']}, {info['cores']} cores, load average {info['loadavg']}; threads: minitrans/numba "
          f"{info['numba_threads']}, OpenBLAS {info['openblas_threads']}, torch {info['torch_threads']}")
    print(f"python {info['python']}, numpy {info['numpy']}, numba {info['numba']}, torch {info['torch']}, "
          f"minitrans {info['minitrans']}; ratio = minitrans time / peer time (< 1: minitrans faster)\n")
    head = f"{'workload':<20}{'case':<24}{'metric':<15}{'minitrans':>11}  {'peer':<16}{'peer val':>10}{'ratio':>7}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['workload']:<20}{r['case']:<24}{r['metric']:<15}{_fmt(r['minitrans']):>11}  "
              f"{r['peer_name'] or '—':<16}{_fmt(r['peer']):>10}{_fmt(r['ratio']):>7}")


def markdown(rows: list, info: dict, raw: dict) -> str:
    gpu = "not measured (no GPU in this session)"
    lines = [f"<!-- bench:threads={info['threads']} -->", f"### {info['threads']} thread(s) on each side", "",
             f"- command: `{info['command']}`, {info['date']}",
             f"- machine: {info['cpu']}, {info['cores']} cores (os.cpu_count()); threads: minitrans/numba "
             f"{info['numba_threads']}, OpenBLAS {info['openblas_threads']}, torch {info['torch_threads']}; "
             f"load average at the end {info['loadavg']} (the machine is shared)",
             f"- versions: python {info['python']}, numpy {info['numpy']}, numba {info['numba']}, "
             f"torch {info['torch']}, minitrans {info['minitrans']}",
             "- medians; minitrans and peer repetitions interleaved in the same process; "
             "ratio = minitrans time / peer time (< 1: minitrans faster)", "",
             "| workload | case | metric | minitrans | peer | peer value | ratio | note |",
             "|---|---|---|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['case']} | {r['metric']} | {_fmt(r['minitrans'])} | "
                     f"{r['peer_name'] or '—'} | {_fmt(r['peer'])} | {_fmt(r['ratio'])} | {r['note']} |")
    for w, what in (("W1 toy-LM step", "ms/step"), ("W2 attention", "ms fwd+bwd"),
                    ("W3 matmul", "GFLOP/s (n up to 8192, vs cuBLAS, TF32 off)"), ("W4 softmax", "GB/s")):
        lines.append(f"| {w} | GPU | {what} | {gpu} | — | — | — | |")
    chk = raw.get("W1", {}).get("check")
    if chk:
        lo = raw["W1"]["losses"]
        lines += ["", f"W1 same model and init: first-step loss minitrans {lo['minitrans'][0]:.6f}, torch "
                      f"{lo['torch'][0]:.6f} (|Δ| = {chk['first_loss_abs_diff']:.1e}, tol {chk['tol']:.0e}: "
                      f"{'OK' if chk['ok'] else 'FAIL'}); after one Adam step |Δ| = {chk['second_loss_abs_diff']:.1e}."]
    return "\n".join(lines)


def write_results_md(path: Path, block: str) -> None:
    """Put ``block`` into the bench section of ``path``, replacing the block of the same thread count and
    keeping the others (a run with --threads 1 and one with the default sit side by side)."""
    text = path.read_text() if path.exists() else "# Results\n"
    blocks, pre, post = {}, text.rstrip("\n") + "\n\n", "\n"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        body, post = rest.split(END, 1)
        for part in body.split("<!-- bench:threads=")[1:]:
            blocks[int(part.split(" ", 1)[0])] = "<!-- bench:threads=" + part.strip()
    blocks[int(block.split("=", 1)[1].split(" ", 1)[0])] = block
    head = "## Benchmarks (BENCHMARK.md W1–W6)"
    section = "\n\n".join([BEGIN, head] + [blocks[k] for k in sorted(blocks, reverse=True)] + [END])
    path.write_text(pre + section + post)


# --------------------------------------------------------------------------- W1 profile
# Where a W1 step's time goes. cProfile charges time spent in BLAS, NumPy ufuncs and Numba kernels
# to the Python function that called them, so grouping by that function's file (and class) works.
_BY_FILE = [("ops/linalg.py", "matmul/linear"), ("kernels/cpu/attention", "attention kernels"),
            ("ops/attention.py", "attention kernels"), ("kernels/cpu/layer_norm", "layer norm"),
            ("kernels/cpu/cross_entropy", "cross-entropy"), ("kernels/cpu/softmax", "elementwise ops"),
            ("kernels/cpu/adam", "Adam"), ("optim/", "Adam"), ("ops/elementwise.py", "elementwise ops"),
            ("ops/reduce.py", "elementwise ops"), ("backends/cpu.py", "elementwise ops"),
            ("numpy/_core/fromnumeric", "elementwise ops"), ("ops/shape.py", "shape/view ops")]
_BY_CLASS = {"LayerNorm": "layer norm", "CrossEntropy": "cross-entropy", "LogSoftmax": "cross-entropy",
             "Softmax": "elementwise ops", "Embedding": "embedding"}
_ALLOC = ("numpy.zeros", "numpy.empty", "numpy.ones", "numpy.full", "numpy.array", "numpy.asarray",
          "numpy.ascontiguousarray", "'copy'", "'astype'", "numpy.concatenate")
_OVERHEAD = "Python overhead (Function.apply, engine, Tensor, Module)"


def _enclosing_class(path: str, line: int, cache: dict = {}) -> str | None:  # noqa: B006 (a cache)
    import ast

    if path not in cache:
        try:
            tree = ast.parse(Path(path).read_text())
        except (OSError, SyntaxError):
            tree = None
        cache[path] = [] if tree is None else [(n.lineno, n.end_lineno, n.name) for n in ast.walk(tree)
                                               if isinstance(n, ast.ClassDef)]
    return next((name for a, b, name in cache[path] if a <= line <= b), None)


def profile_group(path: str, line: int, func: str) -> str:
    """The group of one cProfile entry (see the module docstring of this section)."""
    p = path.replace(os.sep, "/")
    if p == "~":  # a builtin: allocation, a ufunc method, or interpreter work
        if any(k in func for k in _ALLOC):
            return "allocation"
        if "ufunc" in func:
            return "embedding" if "'at'" in func else "elementwise ops"
        if "reshape" in func or "transpose" in func:
            return "shape/view ops"
        return _OVERHEAD
    if "ops/nn.py" in p:
        return _BY_CLASS.get(_enclosing_class(path, line), "other")
    group = next((g for key, g in _BY_FILE if key in p), None)
    if group:
        return group
    if "/minitrans/" in p or "/numba/" in p:
        return _OVERHEAD
    return "other"


def profile_w1(step, n_steps: int, out: Path) -> dict:
    import cProfile
    import io
    import pstats

    for _ in range(3):     # warm-up: Numba compilation and Adam state allocation are not profiled
        step()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(n_steps):
        step()
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    groups: dict[str, float] = {}
    for (path, line, func), (_, _, tt, _, _) in stats.stats.items():
        g = profile_group(path, line, func)
        groups[g] = groups.get(g, 0.0) + tt
    total = sum(groups.values())
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(40)
    info = machine_info(numba.get_num_threads())
    lines = [f"W1 toy-LM step profile (minitrans): cProfile of {n_steps} steps after 3 warm-up, sorted by tottime",
             f"command: {info['command']}  date: {info['date']}",
             f"machine: {info['cpu']}, {info['cores']} cores, numba threads {info['numba_threads']}, "
             f"load average {info['loadavg']}",
             f"wall {wall / n_steps * 1e3:.1f} ms/step under the profiler; profiled total "
             f"{total / n_steps * 1e3:.1f} ms/step", "",
             f"{'group':<58}{'ms/step':>9}{'share':>8}"]
    for g, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"{g:<58}{tt / n_steps * 1e3:>9.1f}{tt / total:>8.1%}")
    text = "\n".join(lines) + "\n\n" + buf.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print("\n".join(text.splitlines()[:len(lines) + 22]))
    print(f"wrote {out}")
    return dict(groups_ms_per_step={g: tt / n_steps * 1e3 for g, tt in groups.items()})


# --------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced set: under a minute")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads, e.g. W1,W3")
    ap.add_argument("--out", default="experiments/results/bench.json")
    ap.add_argument("--results-md", default="experiments/RESULTS.md", help="'' to skip the Markdown")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=numba.get_num_threads(),
                    help="threads for both sides (Numba, OpenBLAS, torch); default: Numba's count")
    ap.add_argument("--profile-w1", action="store_true", help="cProfile W1 steps instead of benchmarking")
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--profile-out", default="experiments/results/w1_profile.txt")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)     # the same count on both sides
    if args.profile_w1:
        return profile_w1(w1_steps(args.seed)["minitrans"], args.profile_steps, Path(args.profile_out))
    only = [w.strip().upper() for w in args.only.split(",")]
    q = args.quick
    rng = np.random.default_rng(args.seed)
    jobs = {"W1": lambda: bench_w1(2 if q else 5, 8 if q else 30, args.seed),
            "W2": lambda: bench_w2([512] if q else [512, 2048, 8192], 5 if q else 7, rng),
            "W3": lambda: bench_w3([256, 1024] if q else [256, 1024, 4096], rng),
            "W4": lambda: bench_w4(2048 if q else 4096, 5 if q else 7, rng),
            "W5": lambda: bench_w5(1000, 3 if q else 5, 10 if q else 30),
            "W6": lambda: bench_w6([1024, 4096] if q else [1024, 4096, 16384, 32768], rng)}
    rows, raw = [], {}
    bar = tqdm([w for w in WORKLOADS if w in only], desc="workloads", unit="workload")
    for w in bar:
        bar.set_postfix_str(w)
        r, raw[w] = jobs[w]()
        rows += r
    info = machine_info(threads)
    print_table(rows, info)
    chk = raw.get("W1", {}).get("check")
    if chk:
        lo = raw["W1"]["losses"]
        print(f"\nW1 check (same model and init): first-step loss minitrans {lo['minitrans'][0]:.6f} torch "
              f"{lo['torch'][0]:.6f} |Δ| {chk['first_loss_abs_diff']:.1e} (tol 1e-4) "
              f"{'OK' if chk['ok'] else 'FAIL'}; after one Adam step |Δ| {chk['second_loss_abs_diff']:.1e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = dict(info=info, quick=q, rows=rows, raw=raw)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {out}")
    if args.results_md:
        write_results_md(Path(args.results_md), markdown(rows, info, raw))
        print(f"wrote the bench section of {args.results_md}")
    return result


if __name__ == "__main__":
    main()
