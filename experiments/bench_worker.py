"""One side of a benchmark, alone in its process: ``bench.py`` starts one of these per framework
and round, so no two frameworks' thread pools ever share a process.

    python experiments/bench_worker.py --framework torch --threads 2 --jobs jobs.json --out res.json

``jobs.json`` is a list of job dicts (``{"workload": "W1", ...}``, see ``JOBS``); the result is the
same list with each job's timings (seconds per call, after warm-up), its median and what the
workload checks (first-step losses, a final gradient, peak RSS). Thread counts are fixed before
any framework is imported: the environment (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``NUMBA_NUM_THREADS``, ``MKL_NUM_THREADS``, and XLA's flags for JAX) and then each framework's own
call (``mt.set_num_threads``, ``torch.set_num_threads``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

FRAMEWORKS = ("minitrans", "torch", "jax", "numpy")


def thread_env(threads: int) -> dict:
    """Environment variables that fix every pool's size before a framework starts it."""
    n = str(threads)
    env = dict(OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n, NUMBA_NUM_THREADS=n,
               NUMBA_THREADING_LAYER="workqueue")
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["XLA_FLAGS"] = flags.strip()
    return env


def rss_mib() -> float:
    """Resident set size now (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CPU_TIMES: list = []      # process CPU seconds of each timed call (all threads), beside the wall times


def timed(fn, warmup: int, reps: int) -> list[float]:
    """Wall seconds of ``reps`` calls after ``warmup``; their CPU seconds go to CPU_TIMES (on a loaded
    machine the wall time includes waiting for a core, the CPU time does not)."""
    for _ in range(warmup):
        fn()
    out = []
    CPU_TIMES.clear()
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        CPU_TIMES.append(time.process_time() - c0)
    return out


# --------------------------------------------------------------------------- W1: the toy-LM step
def w1_data(job: dict):
    """The same batches for every framework: random tokens from ``seed``."""
    import numpy as np

    rng = np.random.default_rng(job["seed"])
    tok = rng.integers(0, job["vocab"], (job["n_batches"], job["batch"], job["seq"] + 1))
    return tok[:, :, :-1].copy(), tok[:, :, 1:].copy()


def w1_flops(job: dict) -> float:
    """Matmul FLOPs of one W1 step: forward 2·(4d² + 2·d·d_ff)·tokens per layer (projections, MLP) +
    4·T·d·tokens per layer (Q·Kᵀ and P·V, the full T×T) + 2·d·vocab·tokens (head); backward twice that."""
    d, dff, T, L, V = job["d_model"], job["dff"], job["seq"], job["layers"], job["vocab"]
    tokens = job["batch"] * T
    fwd = tokens * (L * (2 * (4 * d * d + 2 * d * dff) + 4 * T * d) + 2 * d * V)
    return 3.0 * fwd


def _mt_model(job: dict, weights: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np

    import minitrans as mt
    from seq2seq import DecoderLM, LMConfig

    cfg = LMConfig(vocab_size=job["vocab"], d_model=job["d_model"], nhead=job["nhead"], num_layers=job["layers"],
                   dim_feedforward=job["dff"], dropout=0.0, max_len=job["seq"])
    mt.manual_seed(job["seed"])
    model = DecoderLM(cfg)
    if weights.exists():
        model.load_state_dict({k: mt.tensor(v) for k, v in np.load(weights).items() if not k.startswith("__")})
    else:                                   # the first process writes the initial weights for the others
        arrays = {k: v.numpy() for k, v in model.state_dict().items()}
        arrays["__pe"] = model.pos.pe.numpy()[:job["seq"]]
        tmp = weights.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.rename(weights)
    return model


def w1_minitrans(job: dict, weights: Path):
    import minitrans as mt
    from seq2seq import loss_fn

    model = _mt_model(job, weights)
    xs, ys = w1_data(job)
    mx = [mt.tensor(x) for x in xs]
    opt = mt.optim.Adam(model.parameters(), lr=1e-3)
    it = [0]

    def step():
        i = it[0] % len(mx)
        it[0] += 1
        loss = loss_fn(model(mx[i]), ys[i], ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return float(loss.item())

    return step


def w1_torch(job: dict, weights: Path):
    import numpy as np
    import torch

    nn = torch.nn
    w = dict(np.load(weights))
    d, T = job["d_model"], job["seq"]

    class TorchDecoderLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(job["vocab"], d)
            self.register_buffer("pe", torch.from_numpy(w.pop("__pe")), persistent=False)
            layer = nn.TransformerEncoderLayer(d, job["nhead"], job["dff"], 0.0, batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, job["layers"], nn.LayerNorm(d), enable_nested_tensor=False)
            self.head = nn.Linear(d, job["vocab"])
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T), persistent=False)

        def forward(self, x):
            h = self.embed(x) * math.sqrt(d) + self.pe[:x.shape[1]]
            return self.head(self.blocks(h, mask=self.mask, is_causal=True))

    model = TorchDecoderLM()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = (torch.from_numpy(a) for a in w1_data(job))
    it = [0]

    def step():
        i = it[0] % len(xs)
        it[0] += 1
        loss = torch.nn.functional.cross_entropy(model(xs[i]).reshape(-1, job["vocab"]), ys[i].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return float(loss.item())

    return step


def w1_jax(job: dict, weights: Path):
    """The same model written functionally in JAX, the whole step (loss, gradients, Adam) under jit."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    w = {k: jnp.asarray(v) for k, v in np.load(weights).items()}
    pe = w.pop("__pe")
    d, H, L, V = job["d_model"], job["nhead"], job["layers"], job["vocab"]
    hd = d // H

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + 1e-5) * g + b

    def forward(p, x):
        B, T = x.shape
        h = p["embed.weight"][x] * math.sqrt(d) + pe[:T]
        causal = jnp.tril(jnp.ones((T, T), bool))
        for i in range(L):
            pre = f"blocks.layers.{i}."
            a = ln(h, p[pre + "norm1.weight"], p[pre + "norm1.bias"])
            qkv = a @ p[pre + "self_attn.in_proj_weight"].T + p[pre + "self_attn.in_proj_bias"]
            q, k, v = (t.reshape(B, T, H, hd).transpose(0, 2, 1, 3) for t in jnp.split(qkv, 3, axis=-1))
            s = jnp.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd), -jnp.inf)
            o = (jax.nn.softmax(s, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
            h = h + o @ p[pre + "self_attn.out_proj.weight"].T + p[pre + "self_attn.out_proj.bias"]
            a = ln(h, p[pre + "norm2.weight"], p[pre + "norm2.bias"])
            f = jax.nn.relu(a @ p[pre + "linear1.weight"].T + p[pre + "linear1.bias"])
            h = h + f @ p[pre + "linear2.weight"].T + p[pre + "linear2.bias"]
        h = ln(h, p["blocks.norm.weight"], p["blocks.norm.bias"])
        return h @ p["head.weight"].T + p["head.bias"]

    def loss_fn(p, x, y):
        logp = jax.nn.log_softmax(forward(p, x), axis=-1)
        return -jnp.take_along_axis(logp, y[..., None], axis=-1).mean()

    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8

    @jax.jit
    def train_step(p, m, v, t, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        t = t + 1
        m = jax.tree.map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = jax.tree.map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        p = jax.tree.map(lambda p_, m_, v_: p_ - lr * (m_ / c1) / (jnp.sqrt(v_ / c2) + eps), p, m, v)
        return p, m, v, t, loss

    xs, ys = (jnp.asarray(a) for a in w1_data(job))
    state = [w, jax.tree.map(jnp.zeros_like, w), jax.tree.map(jnp.zeros_like, w), jnp.float32(0.0)]
    it = [0]

    def step():
        i = it[0] % xs.shape[0]
        it[0] += 1
        *new, loss = train_step(*state, xs[i], ys[i])
        state[:] = new
        return float(loss)          # waits for the result

    return step


def run_w1(fw: str, job: dict) -> dict:
    make = {"minitrans": w1_minitrans, "torch": w1_torch, "jax": w1_jax}[fw]
    rss0 = rss_mib()
    step = make(job, Path(job["weights"]))
    losses = [step() for _ in range(2)]      # before and after one Adam update: compared across frameworks
    rss_before = rss_mib()
    times = timed(step, max(job["warmup"] - 2, 0), job["steps"])
    return dict(times=times, losses=losses, flops=w1_flops(job), rss_start_mib=rss0, rss_before_steps_mib=rss_before,
                peak_rss_mib=peak_rss_mib())


# --------------------------------------------------------------------------- W2: attention fwd + bwd
def w2_flops(job: dict) -> float:
    """Q·Kᵀ and P·V forward (4·n²·d per head), dP, dV, dQ, dK backward (8·n²·d); the recomputation of S in
    the backward pass is not counted; causal: half."""
    n, d, h = job["n"], job["d"], job["heads"]
    return 12.0 * n * n * d * h * (0.5 if job["causal"] else 1.0)


def run_w2(fw: str, job: dict) -> dict:
    import numpy as np

    rng = np.random.default_rng(job["seed"])
    n, h, d, causal = job["n"], job["heads"], job["d"], job["causal"]
    q, k, v, do = (rng.standard_normal((h, n, d)).astype(np.float32) for _ in range(4))
    if fw == "minitrans":
        from minitrans.kernels import cpu

        scale = 1.0 / math.sqrt(d)

        def fn():
            o, lse = cpu.attention_forward(q, k, v, None, causal, scale)
            return cpu.attention_backward(q, k, v, o, lse, do, None, causal, scale)[0]
    else:
        import torch

        tq, tk, tv = (torch.from_numpy(a[None]).requires_grad_() for a in (q, k, v))
        tdo = torch.from_numpy(do[None])

        def fn():
            for t in (tq, tk, tv):
                t.grad = None
            torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal).backward(tdo)
            return tq.grad[0].numpy()
    dq = fn()
    times = timed(fn, job["warmup"], job["reps"])
    out = dict(times=times, flops=w2_flops(job), dq_abs_sum=float(np.abs(dq).sum()))
    if fw == "minitrans" and job.get("memory"):     # peak bytes above the inputs (tracemalloc sees NumPy's)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_kernels_cpu as kern

        out["peak_mib"] = kern.peak_memory(n, h, causal, np.random.default_rng(job["seed"]))[0]
    return out


# --------------------------------------------------------------------------- W3 matmul, W4 softmax, GEMM peak
def run_matmul(fw: str, job: dict) -> dict:
    import numpy as np

    rng = np.random.default_rng(job["seed"])
    n = job["n"]
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    if fw == "minitrans":
        import minitrans as mt

        ma, mb = mt.tensor(a), mt.tensor(b)
        fn = lambda: ma @ mb  # noqa: E731
    elif fw == "torch":
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        fn = lambda: ta @ tb  # noqa: E731
    else:
        fn = lambda: a @ b  # noqa: E731
    times = timed(fn, job["warmup"], job["reps"])
    return dict(times=times, flops=2.0 * n ** 3)


def run_w4(fw: str, job: dict) -> dict:
    import numpy as np

    rng = np.random.default_rng(job["seed"])
    n = job["n"]
    x, dy = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    if fw == "minitrans":
        from minitrans.kernels import cpu

        fn = lambda: cpu.softmax_backward(cpu.softmax_forward(x), dy)  # noqa: E731
    else:
        import torch

        tx, tdy = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

        def fn():
            tx.grad = None
            torch.softmax(tx, -1).backward(tdy)
    times = timed(fn, job["warmup"], job["reps"])
    return dict(times=times, bytes=5.0 * x.nbytes)      # fwd: read x, write y; bwd: read y, dy, write dx


# --------------------------------------------------------------------------- W5 op overhead, W6 memory
def run_w5(fw: str, job: dict) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_overhead as ovh

    if fw == "minitrans":
        import minitrans as mt

        leaf = lambda: mt.tensor([1.5], requires_grad=True)  # noqa: E731
    else:
        import torch

        leaf = lambda: torch.tensor([1.5], requires_grad=True)  # noqa: E731
    n = job["ops"]
    times = timed(lambda: ovh.chain(leaf(), n).backward(), job["warmup"], job["reps"])
    return dict(times=times, ops=n, grad=ovh.final_grad(leaf, n))


def run_w6(fw: str, job: dict) -> dict:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_kernels_cpu as kern

    mib, ms = kern.peak_memory(job["n"], 1, False, np.random.default_rng(job["seed"]))
    return dict(times=[ms / 1e3], peak_mib=mib)


JOBS = {"W1": run_w1, "W2": run_w2, "W3": run_matmul, "gemm": run_matmul, "W4": run_w4, "W5": run_w5,
        "W6": run_w6}


def setup_threads(fw: str, threads: int) -> dict:
    """Each framework's own thread call (the environment was set by the parent); what it reports back."""
    info = {}
    if fw == "minitrans":
        import minitrans as mt

        mt.set_threading_layer(os.environ.get("NUMBA_THREADING_LAYER", "default"))
        mt.set_num_threads(threads)     # Numba and OpenBLAS on ``threads`` threads
        if os.environ.get("MT_BENCH_PRODUCTS", "split") == "split":
            # minitrans splits its large products and attention tiles over its own threads, each block a
            # one-thread BLAS call (docs/performance.md): the explicit setting that needs. Otherwise
            # (MT_BENCH_PRODUCTS=blas) OpenBLAS keeps the ``threads`` threads and parallelises each product
            mt.threads.set_blas_num_threads(1)
        # what a minitrans user does for training speed (docs/performance.md): keep freed blocks for reuse
        retained = mt.backends.cpu.retain_freed_memory() if os.environ.get("MT_BENCH_RETAIN", "1") == "1" else False
        info.update(numba_threads=mt.get_num_threads(), blas_threads=mt.threads.get_blas_num_threads(),
                    products=os.environ.get("MT_BENCH_PRODUCTS", "split"),
                    layer=mt.threading_layer(), retain_freed_memory=retained)
    elif fw == "torch":
        import torch

        torch.set_num_threads(threads)
        info.update(torch_threads=torch.get_num_threads(), torch_interop=torch.get_num_interop_threads())
    elif fw == "jax":
        import jax

        info.update(jax=jax.__version__, xla_flags=os.environ.get("XLA_FLAGS", ""))
    else:
        from minitrans import threads as minitrans_threads     # NumPy's OpenBLAS, no minitrans work
        import numpy as np

        minitrans_threads.set_blas_num_threads(threads)
        info.update(blas_threads=minitrans_threads.get_blas_num_threads(), numpy=np.__version__)
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--framework", choices=FRAMEWORKS, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--jobs", required=True, help="JSON file: a list of job dicts")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    info = dict(framework=args.framework, pid=os.getpid(), **setup_threads(args.framework, args.threads))
    results = []
    for job in json.loads(Path(args.jobs).read_text()):
        r = JOBS[job["workload"]](args.framework, job)
        r["median_s"] = statistics.median(r["times"])
        r["median_cpu_s"] = statistics.median(CPU_TIMES) if len(CPU_TIMES) == len(r["times"]) else None
        results.append(dict(job=job, **r))
    Path(args.out).write_text(json.dumps(dict(info=info, results=results)))


if __name__ == "__main__":
    main()
