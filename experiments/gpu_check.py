"""The one command for a machine with an NVIDIA GPU: is the CUDA backend right and how fast is it.

    python experiments/gpu_check.py                 # everything, in well under 8 minutes
    python experiments/gpu_check.py --dry-run       # print the plan, touch no device
    python experiments/gpu_check.py --skip train    # steps: tests, train, bench

1. ``tests``: ``tests/cuda`` and ``tests/kernels`` (less the compile guard, which needs no GPU
   and runs in CI) with ``NUMBA_ENABLE_CUDASIM=0`` (the conftest keeps the production tile sizes
   off the simulator), then the kernels at production tiles on realistic shapes against NumPy /
   PyTorch-on-CPU references (matmul 1024 x 768 x 512, softmax 4096 x 4096, attention 8 heads x
   512 x 64 forward + backward, causal and not, and head dims 128 and 32).
2. ``train``: ``experiments/reverse.py --device cuda`` to its held-out target (99% exact match,
   the CPU run's target) within a time limit.
3. ``bench``: docs/benchmarks.md W1-W4 against PyTorch on the same GPU — W3 matmul against cuBLAS
   float32 with TF32 disabled, W4 softmax forward + backward against torch and a
   device-to-device copy, W2 attention forward + backward against SDPA float32, W1 the toy-LM
   step on the GPU against the same step on the CPU. Medians after warm-up, synchronised.

It writes ``experiments/results/gpu_check.json`` and a "GPU check" section at the end of
``experiments/RESULTS.md`` with the device name, the versions and this exact command.

No network on the GPU machine: what it lacks travels with the checkout as wheels, fetched
beforehand on a machine with network into the ignored folder ``.whl/``::

    python experiments/gpu_check.py --prepare-wheels .whl          # ~20 MB: numpy<2.5, pytest, ...
    python experiments/gpu_check.py --prepare-wheels .whl --full   # ~260 MB: + numba, numba-cuda[cu12], CUDA compilers

When that folder holds prepared wheels, the check first builds a venv in it (``.whl/venv``,
which also sees the machine's packages, PyTorch included, behind its own), installs the
wheels there with ``pip install --no-index --find-links .whl`` and this checkout in editable
mode, and runs itself again with the venv's Python. The small set shadows the machine's NumPy
with one below 2.5 (numba-cuda 0.30.4 cannot compile under NumPy 2.5) and keeps the machine's
own numba / numba-cuda; ``--full`` brings the pins of pyproject's ``cuda`` extra for a
machine without them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("tests", "train", "bench")
# the compile guard needs no GPU and runs in CI; left out here it saves minutes of compiling
PYTEST = ["-m", "pytest", "-q", "-x", "tests/cuda", "tests/kernels", "--ignore=tests/cuda/test_guard.py"]
WHEELS = ROOT / ".whl"  # ignored by git; travels with the checkout to the GPU machine
PY_VERSION = "3.12"  # the GPU machine's Python
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64")
# What the GPU machine may lack: a NumPy that numba-cuda 0.30.4 compiles under, the test runner.
SMALL_SET = ("numpy>=1.24,<2.5", "tqdm>=4.60", "pytest>=7", "hypothesis>=6", "setuptools>=64")
# ... and, with --full, pyproject's core and ``cuda`` extra pins (NVVM/ptxas/runtime wheels).
FULL_SET = SMALL_SET + ("numba>=0.60,<0.69", "numba-cuda[cu12]>=0.30.4,<0.31")
REQUIREMENTS = "requirements.txt"  # written into the wheel folder: what to install from it
IN_VENV = "MINITRANS_GPU_CHECK_VENV"  # set when the check has re-run itself in the wheel venv
W2_NS, W3_NS, W4_N = (512, 2048, 8192), (256, 1024, 4096, 8192), 4096
TARGETS = {"W3": "matmul 4096^3 >= 0.5x cuBLAS float32 (TF32 off)", "W4": "softmax >= 0.7x device-to-device copy GB/s",
           "W2": "attention fwd+bwd >= 0.5x SDPA float32", "W1": "GPU step >= 5x faster than the CPU step"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan as JSON and exit (no device needed)")
    ap.add_argument("--skip", default="", help=f"comma-separated steps to leave out, of {','.join(STEPS)}")
    ap.add_argument("--train-time", type=float, default=180.0, help="seconds the reverse task may train (default 180)")
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions per benchmark case (default 10)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "gpu_check.json"), help="JSON output")
    ap.add_argument("--no-results-md", action="store_true", help="do not write the RESULTS.md section")
    ap.add_argument("--wheels", default=str(WHEELS),
                    help="wheel folder to install from, offline, before running (default .whl; skipped if absent)")
    ap.add_argument("--prepare-wheels", metavar="DIR",
                    help=f"download the cp{PY_VERSION.replace('.', '')} manylinux wheels into DIR (needs network) and exit")
    ap.add_argument("--full", action="store_true",
                    help="with --prepare-wheels: also numba, numba-cuda[cu12] and the CUDA compiler wheels")
    args = ap.parse_args(argv)
    if args.full and not args.prepare_wheels:
        ap.error("--full only applies to --prepare-wheels")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(STEPS)
    if unknown:
        ap.error(f"--skip: unknown step(s) {sorted(unknown)}; the steps are {', '.join(STEPS)}")
    if args.train_time <= 0 or args.reps < 1:
        ap.error("--train-time must be > 0 and --reps >= 1")
    args.steps = [s for s in STEPS if s not in skip]
    return args


def plan(args) -> dict:
    """What a run would do: the commands and workloads, in order."""
    env = "NUMBA_ENABLE_CUDASIM=0"
    p = {"steps": args.steps, "out": args.out, "results_md": not args.no_results_md}
    wheels = Path(args.wheels)
    if (wheels / REQUIREMENTS).exists() and not os.environ.get(IN_VENV):
        p["install"] = [shlex.join(c) for c in install_commands(wheels)]
    if "tests" in args.steps:
        p["tests"] = {"command": f"{env} {shlex.join([sys.executable, *PYTEST])}",
                      "realistic_shapes": ["matmul 1024x768 @ 768x512", f"softmax {W4_N}x{W4_N} fwd+bwd",
                                           "attention 8x512x64 fwd+bwd causal and not, 2x256x128 causal, 4x300x32"]}
    if "train" in args.steps:
        p["train"] = {"command": f"{env} {sys.executable} experiments/reverse.py --device cuda --target 0.99 "
                                 f"--time-limit {args.train_time:g} --quiet --overwrite --out-dir <tmp>",
                      "passes_if": "held-out exact match >= 0.99"}
    if "bench" in args.steps:
        p["bench"] = {"W3": {"n": list(W3_NS), "peer": "torch.matmul float32, TF32 off"},
                      "W4": {"n": W4_N, "peer": "torch softmax fwd+bwd, and a device-to-device copy"},
                      "W2": {"n": list(W2_NS), "heads": 8, "head_dim": 64, "causal": [False, True],
                             "peer": "torch SDPA float32"},
                      "W1": {"peer": "the same minitrans step on the CPU"}, "reps": args.reps, "targets": TARGETS}
    return p


# ------------------------------------------------------------------------------- wheels
def prepare_command(folder: Path, full: bool) -> list:
    """The ``pip download`` that fetches the wheels for the GPU machine (its Python, manylinux,
    binary wheels only, so nothing is built there)."""
    cmd = [sys.executable, "-m", "pip", "download", "--python-version", PY_VERSION, "--only-binary=:all:",
           "--implementation", "cp"]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    return cmd + ["-d", str(folder), *(FULL_SET if full else SMALL_SET)]


def prepare_wheels(folder: Path, full: bool, run=subprocess.run) -> int:
    """Download the wheels into ``folder`` and record the requirements to install from them."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = prepare_command(folder, full)
    print(shlex.join(cmd), flush=True)
    r = run(cmd)
    if r.returncode != 0:
        print(f"gpu_check: pip download failed (exit {r.returncode}); {folder} is incomplete")
        return r.returncode
    (folder / REQUIREMENTS).write_text("\n".join(FULL_SET if full else SMALL_SET) + "\n")
    print(f"gpu_check: wheels for Python {PY_VERSION} in {folder}; on the GPU machine run "
          f"python experiments/gpu_check.py --wheels {folder}")
    return 0


def venv_python(wheels: Path) -> Path:
    return wheels / "venv" / "bin" / "python"


def outer_paths() -> list:
    """This interpreter's site-packages folders (system, user, or its own venv/conda env's)."""
    import site
    import sysconfig

    paths = [sysconfig.get_paths()[k] for k in ("purelib", "platlib")] + list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    return list(dict.fromkeys(p for p in paths if os.path.isdir(p)))


def install_commands(wheels: Path) -> list:
    """The offline install: a venv in the wheel folder, the wheel folder's requirements into it
    (``--ignore-installed``: every one from the folder, the machine's environment untouched),
    then this checkout in editable mode (no deps: they are the ones just installed or the
    machine's own). The venv sees this interpreter's packages (PyTorch) behind its own through a
    ``.pth`` file written between the first two commands, and runs this interpreter's pip."""
    py = str(venv_python(wheels))
    offline = ["--no-index", "--find-links", str(wheels)]
    return [[sys.executable, "-m", "venv", "--without-pip", "--clear", str(wheels / "venv")],
            [py, "-m", "pip", "install", "-q", *offline, "--ignore-installed", "-r", str(wheels / REQUIREMENTS)],
            [py, "-m", "pip", "install", "-q", *offline, "--no-deps", "-e", str(ROOT)]]


def link_outer_packages(wheels: Path) -> Path:
    """Write the venv's ``.pth`` naming this interpreter's site-packages (after the venv's own)."""
    r = subprocess.run([str(venv_python(wheels)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True)
    pth = Path(r.stdout.strip()) / "_gpu_check_outer.pth"
    pth.write_text("\n".join(outer_paths()) + "\n")
    return pth


def install_and_reexec(wheels: Path, argv) -> int:
    """Install from the wheel folder and run this script again in its venv (no return on success)."""
    for n, cmd in enumerate(install_commands(wheels)):
        print(shlex.join(cmd), flush=True)
        r = subprocess.run(cmd)
        if r.returncode != 0:
            print(f"gpu_check: offline install failed (exit {r.returncode}); prepare the wheels with "
                  f"--prepare-wheels {wheels} (add --full for a machine without numba-cuda)")
            return 3
        if n == 0:
            link_outer_packages(wheels)
    py = str(venv_python(wheels))
    os.execve(py, [py, str(Path(__file__).resolve()), *argv], dict(os.environ, **{IN_VENV: "1"}))
    return 0  # not reached


# ------------------------------------------------------------------------------- helpers
def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "numba", "numba-cuda", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _timed(fn, sync, reps: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn`` (synchronised before and after each call)."""
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


# ------------------------------------------------------------------------------- steps
def run_tests(res: dict) -> bool:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, *PYTEST], cwd=ROOT,
                       env=env, capture_output=True, text=True)
    res["tests"] = {"returncode": r.returncode, "summary": (r.stdout.strip().splitlines() or [""])[-1],
                    "seconds": round(time.perf_counter() - t0, 1)}
    res["tests"]["realistic_shapes"] = checks = realistic_shape_checks()
    return r.returncode == 0 and all(c["ok"] for c in checks)


def realistic_shape_checks() -> list:
    import numpy as np
    import torch
    from numba import cuda

    from minitrans.kernels import cuda as cuda_kernels

    rng = np.random.default_rng(0)
    out = []

    def rel(got, want):
        return float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))

    a = rng.standard_normal((1024, 768)).astype(np.float32)
    b = rng.standard_normal((768, 512)).astype(np.float32)
    e = rel(cuda_kernels.matmul(cuda.to_device(a), cuda.to_device(b)).copy_to_host(), a.astype(np.float64) @ b)
    out.append({"case": "matmul 1024x768x512", "max_rel_err": e, "ok": e < 1e-5})
    x = rng.standard_normal((W4_N, W4_N)).astype(np.float32)
    y = cuda_kernels.softmax_forward(cuda.to_device(x)).copy_to_host()
    want = torch.softmax(torch.from_numpy(x).double(), -1).numpy()
    e = rel(y, want)
    out.append({"case": f"softmax {W4_N}x{W4_N}", "max_rel_err": e, "ok": e < 1e-5})
    # head dims 64, 128 and 32 (one to eight threads per row), an awkward length among them
    for (bh, n, hd), causal in [((8, 512, 64), False), ((8, 512, 64), True), ((2, 256, 128), True),
                                ((4, 300, 32), False)]:
        q, k, v, do = (rng.standard_normal((bh, n, hd)).astype(np.float32) for _ in range(4))
        scale = hd ** -0.5
        dq_, dk_, dv_ = (cuda.to_device(t) for t in (q, k, v))
        o, lse = cuda_kernels.attention_forward(dq_, dk_, dv_, None, causal, scale)
        grads = cuda_kernels.attention_backward(dq_, dk_, dv_, o, lse, cuda.to_device(do), None, causal, scale)
        tq, tk, tv = (torch.from_numpy(t).double().requires_grad_() for t in (q, k, v))
        to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal, scale=scale)
        to.backward(torch.from_numpy(do).double())
        e = max(rel(o.copy_to_host(), to.detach().numpy()),
                *(rel(g.copy_to_host(), t.grad.numpy()) for g, t in zip(grads, (tq, tk, tv))))
        out.append({"case": f"attention {bh}x{n}x{hd} causal={causal}", "max_rel_err": e, "ok": e < 1e-4})
    return out


def run_train(res: dict, seconds: float) -> bool:
    import tempfile

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    with tempfile.TemporaryDirectory() as td:
        cmd = [sys.executable, "experiments/reverse.py", "--device", "cuda", "--target", "0.99", "--time-limit",
               f"{seconds:g}", "--quiet", "--overwrite", "--out-dir", td]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        tail = r.stdout.strip().splitlines()[-3:]
    ok = r.returncode == 0 and any("done: target reached" in l for l in tail)
    res["train"] = {"returncode": r.returncode, "last_lines": tail, "seconds": round(time.perf_counter() - t0, 1),
                    "reached_target": ok}
    return ok


def run_bench(res: dict, reps: int) -> None:
    import numpy as np
    import torch
    from numba import cuda

    import minitrans as mt
    from minitrans.kernels import cuda as cuda_kernels

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    msync, tsync = cuda.synchronize, torch.cuda.synchronize
    rng = np.random.default_rng(0)
    rows = []
    for n in W3_NS:
        a = rng.standard_normal((n, n)).astype(np.float32)
        da, ta = cuda.to_device(a), torch.from_numpy(a).to(dev)
        ours = _timed(lambda: cuda_kernels.matmul(da, da), msync, reps)
        peer = _timed(lambda: ta @ ta, tsync, reps)
        gf = 2 * n ** 3 / 1e6
        rows.append({"workload": "W3 matmul", "case": f"n={n}", "metric": "GFLOP/s", "minitrans": gf / ours,
                     "peer": "cuBLAS (torch, TF32 off)", "peer_value": gf / peer, "ratio": peer / ours})
    x = rng.standard_normal((W4_N, W4_N)).astype(np.float32)
    dx, tx = cuda.to_device(x), torch.from_numpy(x).to(dev).requires_grad_()
    gy = cuda.to_device(x)

    def ours_sm():
        y = cuda_kernels.softmax_forward(dx)
        cuda_kernels.softmax_backward(y, gy)

    def torch_sm():
        y = torch.softmax(tx, -1)
        torch.autograd.grad(y, tx, tx.detach())

    nbytes = 5 * x.nbytes  # fwd: read x, write y; bwd: read y, dy, write dx
    ours, peer = _timed(ours_sm, msync, reps), _timed(torch_sm, tsync, reps)
    copy = _timed(lambda: tx.detach().clone(), tsync, reps)
    rows.append({"workload": "W4 softmax", "case": f"{W4_N}x{W4_N} fwd+bwd", "metric": "GB/s",
                 "minitrans": nbytes / ours / 1e6, "peer": "torch", "peer_value": nbytes / peer / 1e6,
                 "ratio": peer / ours, "d2d_copy_GBps": 2 * x.nbytes / copy / 1e6,
                 "ratio_to_copy": (nbytes / ours / 1e6) / (2 * x.nbytes / copy / 1e6)})
    for n in W2_NS:
        for causal in (False, True):
            q = rng.standard_normal((8, n, 64)).astype(np.float32)
            dq = cuda.to_device(q)
            tq = torch.from_numpy(q).to(dev)[None].requires_grad_()

            def ours_att():
                o, lse = cuda_kernels.attention_forward(dq, dq, dq, None, causal, 0.125)
                cuda_kernels.attention_backward(dq, dq, dq, o, lse, o, None, causal, 0.125)

            def torch_att():
                o = torch.nn.functional.scaled_dot_product_attention(tq, tq, tq, is_causal=causal, scale=0.125)
                torch.autograd.grad(o, tq, o.detach())

            ours, peer = _timed(ours_att, msync, max(3, reps // 3)), _timed(torch_att, tsync, max(3, reps // 3))
            rows.append({"workload": "W2 attention", "case": f"n={n} causal={causal}", "metric": "ms fwd+bwd",
                         "minitrans": ours, "peer": "torch SDPA float32", "peer_value": peer, "ratio": peer / ours})
    sys.path.insert(0, str(ROOT / "experiments"))
    import bench  # W1's model, batch and loss as in the CPU benchmark

    ms = {}
    for device in ("cuda", "cpu"):
        mt.manual_seed(0)
        model = bench.DecoderLM(bench.W1_CFG)
        model.to(device)
        opt = mt.optim.Adam(model.parameters(), lr=1e-3)
        tok = np.random.default_rng(0).integers(0, bench.W1_CFG.vocab_size, (bench.W1_BATCH, bench.W1_SEQ + 1))
        xt = mt.tensor(tok[:, :-1], device=device)

        def step():
            loss = bench.loss_fn(model(xt), tok[:, 1:], device=device, ignore_index=-100)
            loss.backward()
            opt.step()
            opt.zero_grad()

        ms[device] = _timed(step, mt.cuda.synchronize if device == "cuda" else (lambda: None), max(5, reps // 2))
    rows.append({"workload": "W1 toy-LM step", "case": f"B{bench.W1_BATCH}xT{bench.W1_SEQ}", "metric": "ms/step",
                 "minitrans": ms["cuda"], "peer": "minitrans on the CPU", "peer_value": ms["cpu"],
                 "ratio": ms["cpu"] / ms["cuda"]})
    res["bench"] = rows


def results_md(res: dict) -> str:
    lines = [f"## GPU check ({res['date']})", "",
             f"Device: {res['device']}; versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".",
             f"Command: `{res['command']}`; load average {res['load_avg']}.", ""]
    for step in ("tests", "train"):
        if step in res:
            lines.append(f"- {step}: " + json.dumps(res[step]))
    if "bench" in res:
        lines += ["", "| workload | case | metric | minitrans | peer | peer value | peer time / ours |", "|---|---|---|---|---|---|---|"]
        for r in res["bench"]:
            lines.append(f"| {r['workload']} | {r['case']} | {r['metric']} | {r['minitrans']:.4g} | {r['peer']} | "
                         f"{r['peer_value']:.4g} | {r['ratio']:.3g} |")
        lines += ["", "Targets: " + "; ".join(TARGETS.values()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.prepare_wheels:
        return prepare_wheels(Path(args.prepare_wheels), args.full)
    if args.dry_run:
        print(json.dumps(plan(args), indent=1))
        return 0
    wheels = Path(args.wheels)
    if (wheels / REQUIREMENTS).exists() and not os.environ.get(IN_VENV):
        return install_and_reexec(wheels, argv)
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    sys.path.insert(0, str(ROOT))
    from numba import cuda

    if not cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (numba-cuda found no driver/device); nothing was measured")
        return 2
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": cuda.get_current_device().name
           if not isinstance(cuda.get_current_device().name, bytes) else cuda.get_current_device().name.decode(),
           "versions": _versions(), "command": shlex.join([sys.executable] + sys.argv),
           "load_avg": [round(v, 2) for v in os.getloadavg()], "plan": plan(args)}
    ok = True
    if "tests" in args.steps:
        ok &= run_tests(res)
    if "train" in args.steps:
        ok &= run_train(res, args.train_time)
    if "bench" in args.steps:
        run_bench(res, args.reps)
    res["ok"] = bool(ok)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    if not args.no_results_md:
        with open(ROOT / "experiments" / "RESULTS.md", "a") as f:
            f.write("\n" + results_md(res))
    print(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
