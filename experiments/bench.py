"""The benchmark suite: docs/benchmarks.md workloads W1–W6, minitrans against PyTorch (and JAX) measured fairly.

Every framework runs in its own process (``bench_worker.py``): two frameworks in one process slow
each other through their thread pools, and the comparison is then a fiction. The sides take turns
process by process (minitrans, torch, [jax], minitrans, torch, … over ``--rounds`` ≥ 3), each with
the same thread settings (``--threads``: Numba, OpenBLAS, OpenMP, MKL and XLA all get the same
count through the environment and each framework's own call; minitrans then puts OpenBLAS on one
thread and splits large products over its own threads, the setting docs/performance.md recommends
for training; ``--products blas`` leaves OpenBLAS on ``--threads`` threads instead, which wins on
the W1 step when other processes load the cores, since OpenBLAS's waiting threads keep theirs,
and loses badly on the tiled attention of long sequences); a figure is the median over rounds
of each process's median after warm-up. W1 uses the same batches and the same initial weights on
every side (the first minitrans process writes them, the others load them) and the first two
losses are compared. Every table records the load average before and after and the GFLOP/s of a
float32 2048³ NumPy GEMM measured in the same run (the machine's practical limit; W1/W2 rows give
their FLOP count and the fraction of that peak they reach). ratio = minitrans time / peer time
(< 1: minitrans faster). Writes JSON and the section between ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` of experiments/RESULTS.md (sweeps: ``<!-- sweep:begin/end -->`` and a PNG).

    python experiments/bench.py --quick --rounds 1       # plumbing check, a minute
    python experiments/bench.py --threads 2 --rounds 3   # the tables
    python experiments/bench.py --threads 1 --rounds 3 --only W1,W3,W4,W5
    python experiments/bench.py --threads 2 --rounds 3 --only W1 --products blas
    python experiments/bench.py --sweep --rounds 3       # W1 over d_model and sequence, W2 over n
    python experiments/bench.py --profile-w1             # cProfile of W1 steps -> results/w1_profile.txt
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_worker           # same directory: run as a script

HERE = Path(__file__).resolve().parent
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SWEEP_BEGIN, SWEEP_END = "<!-- sweep:begin -->", "<!-- sweep:end -->"
BENCH_HEAD = """## Benchmarks (docs/benchmarks.md W1–W6)

Measured with `experiments/bench.py`: **each framework in its own process**, the sides alternated over 3
rounds, the same thread count for every side, medians of the per-process medians, the machine's load and
a same-run 2048³ GEMM figure beside each table (docs/performance.md explains the method). The load
average is printed with each table (while the benchmark runs, its own processes keep it near the thread
count); a table whose 1-minute load before the run exceeded the core count is marked **shared with other
jobs**: its wall times are upper bounds, and the CPU-time figures in the notes (the process's CPU seconds
per call, all threads) are the steadier comparison.

**What changed from the earlier tables, and why.** The tables that stood here before timed minitrans
and PyTorch alternately inside one process. Their thread pools then slow each other (NumPy's OpenBLAS
workers spin after each call and take the cores from torch's OpenMP pool), and PyTorch's W1 step ran at
about half its solo speed: the published W1 ratio of 0.61 (minitrans faster) was that artefact. Measured
apart on a quiet machine, the code of that time was 2.1× slower than PyTorch at 2 threads and 1.4× at 1
thread. Every figure of that method has been replaced by the tables below."""
EXTRA_ENV: dict = {}          # set by main(): e.g. MT_BENCH_RETAIN=0 for --no-retain


# --------------------------------------------------------------------------- processes
def available(fw: str) -> bool:
    return fw in ("minitrans", "numpy") or importlib.util.find_spec(fw) is not None


def run_process(fw: str, jobs: list, threads: int, layer: str, timeout: float = 1800, extra_env=None) -> dict:
    """One worker process: ``fw`` alone, ``threads`` threads, the given jobs in order."""
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        jf, out = Path(tmp, "jobs.json"), Path(tmp, "out.json")
        jf.write_text(json.dumps(jobs))
        env = {**os.environ, **bench_worker.thread_env(threads), "NUMBA_THREADING_LAYER": layer, **(extra_env or {})}
        p = subprocess.run([sys.executable, str(HERE / "bench_worker.py"), "--framework", fw, "--threads",
                            str(threads), "--jobs", str(jf), "--out", str(out)], env=env, capture_output=True,
                           text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"the {fw} worker failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        return json.loads(out.read_text())


def race(jobs: dict, rounds: int, threads: int, layer: str, label: str) -> dict:
    """Run each side's job list in its own process, the sides alternating (A, B, A, B, …) for ``rounds``
    rounds. Returns {side: [per-job summary]} where a job's ``median_s`` is the median over rounds of the
    per-process medians, and ``rounds`` keeps every process's result."""
    per = {fw: [] for fw in jobs}
    infos = {fw: [] for fw in jobs}
    for r in range(rounds):
        for fw, js in jobs.items():
            t0 = time.perf_counter()
            res = run_process(fw, js, threads, layer, extra_env=EXTRA_ENV)
            print(f"  {label} round {r + 1}/{rounds} {fw}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            per[fw].append(res["results"])
            infos[fw].append(res["info"])
    out = {}
    for fw, runs in per.items():
        summary = []
        for i in range(len(jobs[fw])):
            procs = [run[i] for run in runs]
            s = {k: v for k, v in procs[0].items() if k not in ("times", "median_s", "median_cpu_s")}
            s["process_medians_s"] = [p["median_s"] for p in procs]
            s["median_s"] = statistics.median(s["process_medians_s"])
            cpu = [p.get("median_cpu_s") for p in procs]
            s["median_cpu_s"] = statistics.median(cpu) if None not in cpu else None
            for k in ("peak_rss_mib", "rss_start_mib", "peak_mib"):
                if k in procs[0]:
                    s[k] = statistics.median(p[k] for p in procs)
            summary.append(s)
        out[fw] = dict(jobs=summary, info=infos[fw][0])
    return out


# --------------------------------------------------------------------------- machine
def _version(pkg: str):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def gemm_gflops(threads: int, layer: str, n: int = 2048) -> float:
    """GFLOP/s of a float32 n³ NumPy GEMM in its own process: the machine's practical peak right now."""
    job = dict(workload="gemm", n=n, seed=0, warmup=2, reps=5)
    res = run_process("numpy", [job], threads, layer)["results"][0]
    return 2 * n ** 3 / res["median_s"] / 1e9


def machine_info(threads: int, layer: str) -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    return dict(cpu=model, cores=os.cpu_count(), threads=threads, numba_layer=layer,
                python=platform.python_version(), numpy=_version("numpy"), numba=_version("numba"),
                torch=_version("torch"), jax=_version("jax"), minitrans=_version("minitrans"),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command="python " + shlex.join([sys.argv[0].replace(str(HERE.parent) + os.sep, "")] + sys.argv[1:]))


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------- workloads
def row(workload, case, metric, ours, peer_name=None, peer=None, ratio=None, note="", gflop=None,
        ours_peak=None, peer_peak=None) -> dict:
    return dict(workload=workload, case=case, metric=metric, minitrans=ours, peer_name=peer_name, peer=peer,
                ratio=ratio, note=note, gflop=gflop, minitrans_peak_frac=ours_peak, peer_peak_frac=peer_peak)


def w1_job(tmp: str, seed: int, warmup: int, steps: int, d_model=128, seq=64, batch=32) -> dict:
    """docs/benchmarks.md's W1 (vocab 64, 4 heads, d_ff 4·d_model, 2 layers) at the given sizes."""
    return dict(workload="W1", vocab=64, d_model=d_model, nhead=4, layers=2, dff=4 * d_model, seq=seq,
                batch=batch, n_batches=4, seed=seed, warmup=warmup, steps=steps,
                weights=str(Path(tmp, f"w1_d{d_model}_t{seq}_s{seed}.npz")))


def _timed_rows(workload, cases, res, peers, peak, metric="ms", scale=1e3, note=""):
    """One row per case and peer: medians (× scale), ratio, and for FLOP-counted jobs the fraction of peak."""
    rows = []
    ours = res["minitrans"]["jobs"]
    for i, case in enumerate(cases):
        o = ours[i]
        fl = o.get("flops")
        frac = (lambda s: fl / s / 1e9 / peak) if fl else (lambda s: None)
        if not peers:
            rows.append(row(workload, case, metric, o["median_s"] * scale, gflop=fl and fl / 1e9,
                            ours_peak=frac(o["median_s"]), note=note))
        for p in peers:
            q = res[p]["jobs"][i]
            cpu = note
            if o.get("median_cpu_s") and q.get("median_cpu_s"):      # CPU time does not count waiting for a core
                cpu = (f"{note}; " if note else "") + (f"CPU {o['median_cpu_s'] * scale:.3g} vs "
                                                       f"{q['median_cpu_s'] * scale:.3g} (ratio "
                                                       f"{o['median_cpu_s'] / q['median_cpu_s']:.2f})")
            rows.append(row(workload, case, metric, o["median_s"] * scale, p, q["median_s"] * scale,
                            o["median_s"] / q["median_s"], cpu, fl and fl / 1e9, frac(o["median_s"]),
                            frac(q["median_s"])))
    return rows


def bench_w1(a, tmp, peak) -> tuple[list, dict]:
    job = w1_job(tmp, a.seed, 3 if a.quick else 5, 8 if a.quick else 30)
    sides = [fw for fw in ("minitrans", "torch", "jax") if available(fw)]
    res = race({fw: [job] for fw in sides}, a.rounds, a.threads, a.layer, "W1")
    case = f"B{job['batch']}xT{job['seq']}, d{job['d_model']}, 2 layers"
    rows = _timed_rows("W1 toy-LM step", [case], res, sides[1:], peak, "ms/step")
    tok = job["batch"] * job["seq"]
    o = res["minitrans"]["jobs"][0]
    for p in sides[1:]:
        q = res[p]["jobs"][0]
        rows.append(row("W1 toy-LM step", "throughput", "tokens/s", tok / o["median_s"], p, tok / q["median_s"],
                        o["median_s"] / q["median_s"]))
    if "torch" in sides:
        q = res["torch"]["jobs"][0]
        rows.append(row("W1 toy-LM step", "peak RSS of the process", "MiB", o["peak_rss_mib"], "torch",
                        q["peak_rss_mib"], o["peak_rss_mib"] / q["peak_rss_mib"], "ru_maxrss, imports included"))
        mo, mq = o["peak_rss_mib"] - o["rss_start_mib"], q["peak_rss_mib"] - q["rss_start_mib"]
        rows.append(row("W1 toy-LM step", "peak RSS above the imported framework", "MiB", mo, "torch", mq, mo / mq,
                        "model, data, optimizer state, activations"))
    losses = {fw: res[fw]["jobs"][0]["losses"] for fw in sides}
    check = {fw: dict(first=abs(losses[fw][0] - losses["minitrans"][0]), second=abs(losses[fw][1] - losses["minitrans"][1]))
             for fw in sides[1:]}
    return rows, dict(job=job, results=res, losses=losses, check=check, tol=1e-4,
                      ok=all(c["first"] <= 1e-4 for c in check.values()))


def bench_w2(a, tmp, peak, ns=None, both=True, memory=True, label="W2") -> tuple[list, dict]:
    ns = ns or ([512] if a.quick else [512, 2048, 8192])
    cases = [(n, c) for n in ns for c in ((False, True) if both else (False,))]
    jobs = [dict(workload="W2", n=n, heads=8, d=64, causal=c, seed=a.seed, warmup=1,
                 reps=2 if n >= 8192 else 5, memory=memory) for n, c in cases]
    sides = ["minitrans"] + (["torch"] if available("torch") else [])
    res = race({fw: jobs for fw in sides}, a.rounds, a.threads, a.layer, label)
    names = [f"n={n} {'causal' if c else 'full'}" for n, c in cases]
    rows = _timed_rows("W2 attention", names, res, sides[1:], peak, "ms fwd+bwd", note="B1 H8 d64")
    if memory:
        for name, (n, c), o in zip(names, cases, res["minitrans"]["jobs"]):
            rows.append(row("W2 attention", name, "peak MiB above inputs", o["peak_mib"],
                            note=f"B1 H8 d64; an n^2 f32 score matrix per head: {4 * n * n / 2**20:.0f} MiB"))
    return rows, dict(jobs=jobs, results=res)


def bench_w3(a, tmp, peak) -> tuple[list, dict]:
    ns = [256, 1024] if a.quick else [256, 1024, 4096]
    jobs = [dict(workload="W3", n=n, seed=a.seed, warmup=2, reps=15 if n <= 256 else 5 if n <= 1024 else 3)
            for n in ns]
    sides = ["minitrans", "numpy"] + (["torch"] if available("torch") else [])
    res = race({fw: jobs for fw in sides}, a.rounds, a.threads, a.layer, "W3")
    rows = []
    for i, n in enumerate(ns):
        gf = {fw: 2 * n ** 3 / res[fw]["jobs"][i]["median_s"] / 1e9 for fw in sides}
        for p in sides[1:]:
            rows.append(row("W3 matmul", f"n={n}", "GFLOP/s", gf["minitrans"], p, gf[p], gf[p] / gf["minitrans"],
                            "mt: a @ b incl. Tensor overhead", 2 * n ** 3 / 1e9, gf["minitrans"] / peak, gf[p] / peak))
    return rows, dict(jobs=jobs, results=res)


def bench_w4(a, tmp, peak) -> tuple[list, dict]:
    n = 2048 if a.quick else 4096
    job = dict(workload="W4", n=n, seed=a.seed, warmup=1, reps=5 if a.quick else 7)
    res = race({fw: [job] for fw in ("minitrans", "torch") if available(fw)}, a.rounds, a.threads, a.layer, "W4")
    o = res["minitrans"]["jobs"][0]
    gb = o["bytes"] / 1e9
    if "torch" not in res:
        return [row("W4 softmax", f"{n}x{n} fwd+bwd", "GB/s", gb / o["median_s"])], dict(job=job, results=res)
    q = res["torch"]["jobs"][0]
    return [row("W4 softmax", f"{n}x{n} fwd+bwd", "GB/s", gb / o["median_s"], "torch", gb / q["median_s"],
                o["median_s"] / q["median_s"], f"{o['median_s'] * 1e3:.1f} ms vs {q['median_s'] * 1e3:.1f} ms")], \
        dict(job=job, results=res)


def bench_w5(a, tmp, peak) -> tuple[list, dict]:
    job = dict(workload="W5", ops=1000, warmup=3 if a.quick else 5, reps=10 if a.quick else 30)
    sides = [fw for fw in ("minitrans", "torch") if available(fw)]
    res = race({fw: [job] for fw in sides}, a.rounds, a.threads, a.layer, "W5")
    us = {fw: res[fw]["jobs"][0]["median_s"] / job["ops"] * 1e6 for fw in sides}
    grads = {fw: res[fw]["jobs"][0]["grad"] for fw in sides}
    if "torch" not in us:
        return [row("W5 op overhead", "chain of 1000", "µs/op fwd+bwd", us["minitrans"])], dict(results=res)
    return [row("W5 op overhead", "chain of 1000", "µs/op fwd+bwd", us["minitrans"], "torch", us["torch"],
                us["minitrans"] / us["torch"], f"d(out)/dx: {grads['minitrans']:.6f} vs {grads['torch']:.6f}")], \
        dict(job=job, results=res)


def bench_w6(a, tmp, peak) -> tuple[list, dict]:
    ns = [1024, 4096] if a.quick else [1024, 4096, 16384, 32768]
    jobs = [dict(workload="W6", n=n, seed=a.seed) for n in ns]
    res = race({"minitrans": jobs}, 1, a.threads, a.layer, "W6")      # a memory figure: one process is enough
    rows, peaks = [], []
    for n, o in zip(ns, res["minitrans"]["jobs"]):
        peaks.append(o["peak_mib"])
        rows.append(row("W6 attention memory", f"n={n}", "peak MiB", o["peak_mib"],
                        note=f"{o['peak_mib'] * 2**20 / n:.0f} B/n; an n^2 f32 matrix: {4 * n * n / 2**20:.0f} MiB"))
    import numpy as np

    slope = float(np.polyfit(np.log(ns), np.log(peaks), 1)[0])
    rows.append(row("W6 attention memory", f"n={ns[0]}..{ns[-1]}", "log-log slope", slope,
                    note="1 = linear in n (tiled), 2 = quadratic"))
    return rows, dict(results=res, loglog_slope=slope)


BENCHES = {"W1": bench_w1, "W2": bench_w2, "W3": bench_w3, "W4": bench_w4, "W5": bench_w5, "W6": bench_w6}


# --------------------------------------------------------------------------- sweeps
SWEEP_D = (64, 128, 256, 512)
SWEEP_T = (64, 128, 256, 512, 1024)
SWEEP_N = (128, 256, 512, 1024, 2048, 4096, 8192)


def sweeps(a, tmp, peak) -> tuple[list, dict]:
    """W1 over d_model (T 64, batch 32) and over sequence length (d_model 128, batch·T = 2,048 tokens
    held fixed, so each point is one step's worth of tokens), W2 over n (full, 8 heads): minitrans
    against torch, each point's ratio and fraction of the GEMM peak."""
    steps = dict(warmup=2, steps=5) if a.quick else dict(warmup=3, steps=10)
    jobs = [w1_job(tmp, a.seed, d_model=d, **steps) for d in SWEEP_D]
    jobs += [w1_job(tmp, a.seed, seq=t, batch=2048 // t, **steps) for t in SWEEP_T if t != 64]
    sides = ["minitrans", "torch"]
    res = race({fw: jobs for fw in sides}, a.rounds, a.threads, a.layer, "W1 sweep")
    cases = [f"d{j['d_model']} T{j['seq']} B{j['batch']}" for j in jobs]
    rows = _timed_rows("W1 sweep", cases, res, ["torch"], peak, "ms/step")
    w2_rows, w2 = bench_w2(a, tmp, peak, ns=list(SWEEP_N), both=False, memory=False, label="W2 sweep")
    for r in w2_rows:
        r["workload"] = "W2 sweep"
    return rows + w2_rows, dict(w1=dict(jobs=jobs, results=res), w2=w2)


def plot_sweeps(rows: list, info: dict, path: Path) -> str | None:
    sys.path.insert(0, str(HERE))
    from common import _pyplot

    plt = _pyplot()
    if plt is None:
        return None
    groups = [("W1 sweep", "d", "W1 step vs d_model (T 64, B 32)", "d_model"),
              ("W1 sweep", "T", "W1 step vs sequence (d 128, B·T 2048)", "sequence length T"),
              ("W2 sweep", "n", "W2 attention fwd+bwd vs n (8 heads, d 64)", "n")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for ax, (w, key, title, xlabel) in zip(axes, groups):
        pts = [r for r in rows if r["workload"] == w]
        if w == "W1 sweep":
            pick = (lambda c: c.split()[1] == "T64") if key == "d" else (lambda c: c.split()[0] == "d128")
            pts = [r for r in pts if pick(r["case"])]
            xs = [int(r["case"].split()[0 if key == "d" else 1][1:]) for r in pts]
        else:
            xs = [int(r["case"].split()[0][2:]) for r in pts]
        ax.plot(xs, [r["ratio"] for r in pts], "o-", label="time ratio minitrans / torch")
        ax.plot(xs, [r["minitrans_peak_frac"] for r in pts], "s--", label="minitrans: fraction of GEMM peak")
        ax.plot(xs, [r["peer_peak_frac"] for r in pts], "^:", label="torch: fraction of GEMM peak")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("ratio (< 1: minitrans faster) / fraction of peak")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{info['threads']} thread(s) each side, separate processes, median of {info['rounds']} rounds; "
                 f"GEMM peak {info['gemm_gflops']:.0f} GFLOP/s; load {info['load_before']} → {info['load_after']}",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------- reporting
def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _busy(info: dict) -> str:
    """A warning when other work shared the machine: a 1-minute load average above the core count
    before the run (the benchmark's own processes keep it near the thread count while it runs)."""
    return "**shared with other jobs**: " if float(info["load_before"].split()[0]) > info["cores"] else ""


def _header(info: dict) -> list[str]:
    return [f"- command: `{info['command']}`, {info['date']}",
            f"- machine: {info['cpu']}, {info['cores']} cores (os.cpu_count()), {_busy(info)}load "
            f"average {info['load_before']} before, {info['load_after']} after; float32 2048³ NumPy GEMM in the "
            f"same run: {info['gemm_before']:.0f} GFLOP/s before, {info['gemm_after']:.0f} after (peak used for "
            f"the %-of-peak columns: {info['gemm_gflops']:.0f})",
            f"- {info['threads']} thread(s) for every side (Numba, OpenBLAS, OpenMP/torch, XLA; minitrans with "
            + ("OpenBLAS on one thread and large products split over its own threads" if info.get(
                "minitrans_products", "split") == "split" else "OpenBLAS parallelising each product itself")
            + "), Numba threading "
            f"layer `{info['numba_layer']}`, minitrans with `retain_freed_memory()`: "
            f"{'yes' if info.get('minitrans_retain_freed_memory', True) else 'no'}; versions: python {info['python']}, numpy {info['numpy']}, numba "
            f"{info['numba']}, torch {info['torch']}, jax {info['jax']}, minitrans {info['minitrans']}",
            f"- each framework in its own process, sides alternated over {info['rounds']} round(s), figure = median "
            "of the per-process medians after warm-up; ratio = minitrans time / peer time (< 1: minitrans faster)"]


def _table(rows: list) -> list[str]:
    lines = ["| workload | case | metric | minitrans | peer | peer value | ratio | GFLOP | mt % of peak | "
             "peer % of peak | note |", "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['case']} | {r['metric']} | {_fmt(r['minitrans'])} | "
                     f"{r['peer_name'] or '—'} | {_fmt(r['peer'])} | {_fmt(r['ratio'])} | {_fmt(r['gflop'])} | "
                     f"{_pct(r['minitrans_peak_frac'])} | {_pct(r['peer_peak_frac'])} | {r['note']} |")
    return lines


def markdown(rows: list, info: dict, raw: dict) -> str:
    lines = [f"<!-- bench:threads={info['threads']} -->", f"### {info['threads']} thread(s) on each side", ""]
    lines += _header(info) + [""] + _table(rows)
    gpu = "not measured (no GPU in this session)"
    for w, what in (("W1 toy-LM step", "ms/step"), ("W2 attention", "ms fwd+bwd"),
                    ("W3 matmul", "GFLOP/s (n up to 8192, vs cuBLAS, TF32 off)"), ("W4 softmax", "GB/s")):
        lines.append(f"| {w} | GPU | {what} | {gpu} | — | — | — | — | — | — | |")
    w1 = raw.get("W1")
    if w1 and w1["check"]:
        lo = w1["losses"]
        parts = [f"{fw} {lo[fw][0]:.6f} (|Δ| {c['first']:.1e}; after one Adam step {c['second']:.1e})"
                 for fw, c in w1["check"].items()]
        lines += ["", f"W1 same batches and initial weights on every side: first-step loss minitrans "
                      f"{lo['minitrans'][0]:.6f}, " + ", ".join(parts) +
                      f" — tolerance {w1['tol']:.0e}: {'OK' if w1['ok'] else 'FAIL'}."]
    return "\n".join(lines)


def sweep_markdown(rows: list, info: dict, png: str | None) -> str:
    lines = [f"<!-- bench:threads={info['threads']} -->", f"### Sweeps, {info['threads']} thread(s) on each side", ""]
    lines += _header(info) + ["- W1 over d_model: T 64, batch 32, d_ff 4·d_model, 4 heads, 2 layers; over T: "
                              "d_model 128 and batch·T = 2,048 tokens; W2: full (non-causal), 8 heads, d 64", ""]
    lines += _table(rows)
    if png:
        lines += ["", f"![sweeps]({Path(png).relative_to(HERE).as_posix()})"]
    above = [f"{r['workload']} {r['case']} ({r['ratio']:.2f})" for r in rows if r["ratio"] and r["ratio"] > 1.0]
    lines += ["", "Points above 1.0 (minitrans slower): " + (", ".join(above) if above else "none") + "."]
    return "\n".join(lines)


def print_rows(rows: list, info: dict) -> None:
    print("\n".join(_header(info)))
    print("\n".join(_table(rows)))


def write_results_md(path: Path, block: str, begin: str = BEGIN, end: str = END,
                     head: str = "## Benchmarks (docs/benchmarks.md W1–W6)") -> None:
    """Put ``block`` into the ``begin``…``end`` section of ``path``, replacing the block of the same thread
    count and keeping the others (a run with --threads 1 and one with --threads 2 sit side by side)."""
    text = path.read_text() if path.exists() else "# Results\n"
    blocks, pre, post = {}, text.rstrip("\n") + "\n\n", "\n"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        body, post = rest.split(end, 1)
        for part in body.split("<!-- bench:threads=")[1:]:
            blocks[int(part.split(" ", 1)[0])] = "<!-- bench:threads=" + part.strip()
    blocks[int(block.split("=", 1)[1].split(" ", 1)[0])] = block
    section = "\n\n".join([begin, head] + [blocks[k] for k in sorted(blocks, reverse=True)] + [end])
    path.write_text(pre + section + post)


# --------------------------------------------------------------------------- W1 profile
# Where a W1 step's time goes. cProfile charges time spent in BLAS, NumPy ufuncs and Numba kernels
# to the Python function that called them, so grouping by that function's file (and class) works.
_BY_FILE = [("ops/linalg.py", "matmul/linear"), ("kernels/cpu/matmul", "matmul/linear"), ("kernels/cpu/attention", "attention kernels"),
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


def _function_classes():
    from minitrans.autograd.function import Function

    todo, seen = [Function], []
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen


def op_times(step, n_steps: int, clock) -> tuple[dict, float]:
    """{(op, "forward" | "backward"): (ms per step, calls per step)} of every autograd op over
    ``n_steps`` steps, and the step's own ms: each op's ``forward``/``backward`` is wrapped for the
    run (and restored), timed with ``clock``; what the step spends outside them (the engine,
    Function.apply, the optimizer, Python) is the difference."""
    totals: dict = {}
    plan = []        # found before any wrapping, so that no wrapper wraps another
    for cls in _function_classes():
        for name in ("forward", "backward"):
            owner = next(c for c in cls.__mro__ if name in c.__dict__)
            if owner.__name__ == "Function":
                continue
            raw = owner.__dict__[name]
            fn = raw.__get__(None, cls)          # a staticmethod's function, a classmethod bound to cls
            plan.append((cls, name, fn, cls.__dict__.get(name)))
    for cls, name, fn, _ in plan:
        def timed_call(*args, _fn=fn, _key=(cls.__name__, name), **kwargs):
            t0 = clock()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent, calls = totals.get(_key, (0.0, 0))
                totals[_key] = (spent + clock() - t0, calls + 1)

        setattr(cls, name, staticmethod(timed_call))
    try:
        t0 = clock()
        for _ in range(n_steps):
            step()
        whole = clock() - t0
    finally:
        for cls, name, _, own in plan:
            if own is None:
                delattr(cls, name)
            else:
                setattr(cls, name, own)
    return ({k: (v * 1e3 / n_steps, c / n_steps) for k, (v, c) in totals.items()}, whole * 1e3 / n_steps)


def profile_w1(step, n_steps: int, out: Path, a) -> dict:
    import cProfile
    import io
    import pstats

    for _ in range(3):     # warm-up: Numba compilation and Adam state allocation are not profiled
        step()
    # the CPU clock (all threads of this process) by default: on a shared machine wall time also counts
    # the time spent waiting for a core, which cProfile would charge to whatever function was running
    clock = time.process_time if a.profile_clock == "cpu" else time.perf_counter
    prof = cProfile.Profile(clock)
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
    info = machine_info(a.threads, a.layer)
    lines = [f"W1 toy-LM step profile (minitrans): cProfile of {n_steps} steps after 3 warm-up, sorted by tottime",
             f"command: {info['command']}  date: {info['date']}",
             f"machine: {info['cpu']}, {info['cores']} cores, threads {a.threads} (layer {a.layer}), "
             f"load average {loadavg()}",
             f"wall {wall / n_steps * 1e3:.1f} ms/step under the profiler; profiled total ({a.profile_clock} clock) "
             f"{total / n_steps * 1e3:.1f} ms/step", "",
             f"{'group':<58}{'ms/step':>9}{'share':>8}"]
    for g, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"{g:<58}{tt / n_steps * 1e3:>9.1f}{tt / total:>8.1%}")
    ops, whole = op_times(step, n_steps, clock)
    inside = sum(ms for ms, _ in ops.values())
    lines += ["", f"per op ({a.profile_clock} clock, no profiler): step {whole:.1f} ms, inside the ops' forward/backward "
              f"{inside:.1f} ms, outside them (engine, Function.apply, optimizer, Python) {whole - inside:.1f} ms", "",
              f"{'op':<44}{'ms/step':>9}{'calls':>7}"]
    for (op, phase), (ms, calls) in sorted(ops.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{op + '.' + phase:<44}{ms:>9.2f}{calls:>7.0f}")
    text = "\n".join(lines) + "\n\n" + buf.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print("\n".join(text.splitlines()[:len(lines) + 22]))
    print(f"wrote {out}")
    return dict(groups_ms_per_step={g: tt / n_steps * 1e3 for g, tt in groups.items()},
                ops_ms_per_step={f"{op}.{phase}": ms for (op, phase), (ms, _) in ops.items()})


# --------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes and steps: a plumbing check")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads, e.g. W1,W3")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of alternating processes (>= 3 for a table)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every side")
    ap.add_argument("--layer", default="workqueue", help="Numba threading layer for minitrans (see minitrans.threads)")
    ap.add_argument("--products", choices=("split", "blas"), default="split",
                    help="how minitrans's matrix products use the threads: split over its own threads, each "
                         "block a one-thread OpenBLAS call (the default), or OpenBLAS on --threads threads")
    ap.add_argument("--no-retain", action="store_true",
                    help="minitrans without retain_freed_memory() (the allocator returns freed blocks to the OS)")
    ap.add_argument("--sweep", action="store_true", help="the W1/W2 scaling sweeps instead of the W1-W6 tables")
    ap.add_argument("--out", default="", help="JSON path; default experiments/results/bench[_sweep]_t<threads>.json")
    ap.add_argument("--results-md", default="experiments/RESULTS.md", help="'' to skip the Markdown")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile-w1", action="store_true", help="cProfile W1 steps (in this process) instead")
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--profile-out", default="experiments/results/w1_profile.txt")
    ap.add_argument("--profile-clock", choices=("cpu", "wall"), default="cpu",
                    help="cProfile's clock: process CPU time (default; robust to a loaded machine) or wall")
    a = ap.parse_args(argv)
    if a.profile_w1:
        import minitrans as mt

        mt.set_threading_layer(a.layer)
        mt.set_num_threads(a.threads)
        if a.products == "split":                 # as bench_worker: minitrans splits the products itself
            mt.threads.set_blas_num_threads(1)
        if not a.no_retain:
            mt.backends.cpu.retain_freed_memory()
        with tempfile.TemporaryDirectory() as tmp:
            step = bench_worker.w1_minitrans(w1_job(tmp, a.seed, 0, 0), Path(tmp, "w.npz"))
            return profile_w1(step, a.profile_steps, Path(a.profile_out), a)
    only = [w.strip().upper() for w in a.only.split(",")]
    EXTRA_ENV["MT_BENCH_RETAIN"] = "0" if a.no_retain else "1"
    EXTRA_ENV["MT_BENCH_PRODUCTS"] = a.products
    info = machine_info(a.threads, a.layer)
    info["minitrans_retain_freed_memory"] = not a.no_retain
    info["minitrans_products"] = a.products
    info.update(rounds=a.rounds, load_before=loadavg())
    info["gemm_before"] = gemm_gflops(a.threads, a.layer)
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="mt-bench-w-") as tmp:
        if a.sweep:
            rows, raw["sweeps"] = sweeps(a, tmp, info["gemm_before"])
        else:
            for w in [w for w in WORKLOADS if w in only]:
                r, raw[w] = BENCHES[w](a, tmp, info["gemm_before"])
                rows += r
    info.update(load_after=loadavg(), gemm_after=gemm_gflops(a.threads, a.layer))
    info["gemm_gflops"] = max(info["gemm_before"], info["gemm_after"])
    for r in rows:                         # fractions against the better of the two GEMM figures
        for k in ("minitrans_peak_frac", "peer_peak_frac"):
            if r[k] is not None:
                r[k] *= info["gemm_before"] / info["gemm_gflops"]
    print_rows(rows, info)
    kind = "bench_sweep" if a.sweep else "bench"
    out = Path(a.out or HERE / "results" / f"{kind}_t{a.threads}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = dict(info=info, quick=a.quick, rows=rows, raw=raw)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {out}")
    if a.results_md:
        if a.sweep:
            png = plot_sweeps(rows, info, HERE / "results" / f"sweeps_t{a.threads}.png")
            write_results_md(Path(a.results_md), sweep_markdown(rows, info, png), SWEEP_BEGIN, SWEEP_END,
                             "## Scaling sweeps (W1 over d_model and sequence, W2 over n)")
        else:
            write_results_md(Path(a.results_md), markdown(rows, info, raw), head=BENCH_HEAD)
        print(f"wrote {a.results_md}")
    return result


if __name__ == "__main__":
    main()
