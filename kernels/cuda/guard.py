"""Compile guard: every kernel the CUDA backend can launch, in every dtype it is launched
with, compiled for a real GPU (sm_90) with the real NVVM compiler — on a machine without one.

Run ``python -m minitrans.kernels.cuda.guard`` (exit status 1 on any problem). It needs the
``cuda`` extra (numba-cuda with its ``cu12`` wheels: NVVM and ``ptxas`` come from PyPI, no
driver or GPU needed) and refuses to run under ``NUMBA_ENABLE_CUDASIM=1``: the simulator runs
kernels as Python and hides exactly what a GPU compiler rejects (a local array whose size is
not a compile-time constant, an atomic on bool, ...).

For each specialisation in ``specs()`` (listed in ``guard_specs.py``) it runs ``numba.cuda.compile_ptx(..., cc=(9, 0))``
and then ``ptxas -v`` (when found) on the PTX, and reports:

* a compile error (typing or lowering);
* any ``.f64`` instruction in a float32 specialisation, unless its ``Spec`` entry carries a
  reason (``Spec.f64_reason``): float32 kernels must not run double-precision math (a Python float
  literal, ``math.inf`` or a float64 scalar argument silently promotes the arithmetic);
* per-thread local memory — the PTX ``__local_depot`` stack plus ``ptxas``' stack frame and
  spill stores — above the kernel's budget: ``LOCAL_BUDGET`` (0 bytes: registers only) unless
  its ``Spec`` entry documents more. The attention kernels keep each row's slice of the padded
  head dim in registers, so they too are held to 0 bytes.

``specs()`` lists the kernels by the factories and dtypes the host wrappers use; the
simulator test ``tests/cuda/test_step_cost.py`` records the kernels a training step really
launches (``_util.record_launches``) and checks each one is listed here.

The findings are cached on disk (``$MINITRANS_PTX_CACHE``, default ``~/.cache/minitrans/ptx``)
under a hash of the kernel's module and ``_util.py``, the ``Spec`` entry and the numba-cuda
version, so a second run compiles only the modules that changed.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .guard_specs import LOCAL_BUDGET, Spec, _mod, launch_keys, specs  # noqa: F401  (re-exported)

CC = (9, 0)
_HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- compiling and checking
def _numba_cuda_version() -> str:
    from importlib.metadata import version

    return version("numba-cuda")


_SIBLING_IMPORT = re.compile(r"^from \.(\w+) import", re.M)


def _sources_hash(module: str) -> str:
    """Hash of a spec's kernel module and every sibling module it imports, directly or not
    (``from .softmax import ...`` compiles softmax's device functions into the kernel)."""
    h = hashlib.sha256()
    todo, seen = [Path(_mod(module).__file__)], set()
    while todo:
        p = todo.pop()
        if p in seen or not p.exists():
            continue
        seen.add(p)
        text = p.read_text()
        h.update(p.name.encode() + text.encode())
        todo.extend(_HERE / f"{name}.py" for name in _SIBLING_IMPORT.findall(text))
    return h.hexdigest()


def _cache_dir() -> Path:
    d = Path(os.environ.get("MINITRANS_PTX_CACHE", Path.home() / ".cache" / "minitrans" / "ptx"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _ptxas() -> str | None:
    spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    if spec is not None and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]) / "bin" / "ptxas"
        if p.exists():
            return str(p)
    return shutil.which("ptxas")


_F64 = re.compile(r"^\s*(?!//|\.reg|\.param)[^;\n]*\.f64\b", re.M)  # instructions, not declarations
_DEPOT = re.compile(r"__local_depot\d+\[(\d+)\]")
_PTXAS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def _allow_device_compile_without_gpu() -> None:
    """numba-cuda asks the current device for its compute capability when it types a call to
    a device function (``Dispatcher.compile_device``); there is no device here, so answer sm_90."""
    import numba.cuda.dispatcher as dispatcher

    class _Device:
        compute_capability = CC

    dispatcher.get_current_device = lambda: _Device()


def compile_spec(spec: Spec, salt: str) -> dict:
    """PTX facts of one spec: ``{"error": str}`` or ``{"f64": n, "depot": bytes, "ptxas": {...}}``."""
    key = hashlib.sha256(f"{salt}|{_sources_hash(spec.module)}|{spec.label()}|{CC}".encode()).hexdigest()
    path = _cache_dir() / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    from numba import cuda

    kern = spec.kernel()
    try:
        ptx, _ = cuda.compile_ptx(kern.py_func, spec.argtypes, cc=CC)
    except Exception as e:  # a compile error is a finding, not a crash of the guard
        msg = str(e).strip().splitlines()
        res = {"error": f"{type(e).__name__}: " + " | ".join(l for l in msg[:6] if l.strip())}
    else:
        res = {"f64": len(_F64.findall(ptx)), "depot": sum(int(n) for n in _DEPOT.findall(ptx))}
        ptxas = _ptxas()
        if ptxas:
            with tempfile.TemporaryDirectory() as td:
                src = Path(td) / "k.ptx"
                src.write_text(ptx)
                r = subprocess.run([ptxas, f"-arch=sm_{CC[0]}{CC[1]}", "-v", str(src), "-o", str(Path(td) / "k.cubin")],
                                   capture_output=True, text=True)
            m = _PTXAS.findall(r.stderr)
            if r.returncode != 0:
                res["error"] = "ptxas: " + r.stderr.strip()[:500]
            elif m:
                res["stack"] = max(int(a) for a, _, _ in m)
                res["spill"] = max(int(b) for _, b, _ in m)
    path.write_text(json.dumps(res))
    return res


def problems(spec: Spec, res: dict) -> list[str]:
    """What is wrong with one compiled spec (empty: nothing)."""
    if "error" in res:
        return [f"compile error: {res['error']}"]
    out = []
    if spec.dtype == "float32" and res["f64"] and not spec.f64_reason:
        out.append(f"{res['f64']} double-precision (.f64) instructions in a float32 kernel")
    local = max(res["depot"], res.get("stack", 0)) + res.get("spill", 0)
    if local > spec.local_budget:
        out.append(f"{local} bytes of local memory per thread (stack {max(res['depot'], res.get('stack', 0))}, "
                   f"spills {res.get('spill', 0)}) over the budget of {spec.local_budget}")
    return out


def _init_worker():
    _allow_device_compile_without_gpu()


def _run_one(args):
    i, spec, salt = args
    return i, compile_spec(spec, salt)


def check(spec_list, jobs: int = 1, verbose: bool = False) -> list[tuple[Spec, list[str]]]:
    """Compile every spec (in ``jobs`` processes) and return the ones with problems."""
    from numba import config

    if config.ENABLE_CUDASIM:
        raise RuntimeError("the compile guard needs the real compiler: run it with NUMBA_ENABLE_CUDASIM=0")
    _allow_device_compile_without_gpu()
    salt = f"numba-cuda {_numba_cuda_version()}"
    work = [(i, s, salt) for i, s in enumerate(spec_list)]
    results = {}
    if jobs > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(jobs, initializer=_init_worker) as pool:
            for i, res in pool.imap_unordered(_run_one, work):
                results[i] = res
    else:
        for w in work:
            i, res = _run_one(w)
            results[i] = res
    bad = []
    for i, s in enumerate(spec_list):
        p = problems(s, results[i])
        if verbose:
            print(("FAIL " if p else "ok   ") + s.label(), *p, sep="\n     " if p else "")
        if p:
            bad.append((s, p))
    return bad


def load_samples(path: str) -> list[Spec]:
    """Extra specs from a Python file defining ``guard_specs()`` (used to show the guard fails)."""
    mod_spec = importlib.util.spec_from_file_location("_guard_samples", path)
    mod = importlib.util.module_from_spec(mod_spec)
    sys.modules["_guard_samples"] = mod
    mod_spec.loader.exec_module(mod)
    return list(mod.guard_specs())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minitrans.kernels.cuda.guard", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compile processes (default 2)")
    ap.add_argument("--samples", help="check only the specs of this file's guard_specs() instead of the backend's")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per spec")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    spec_list = load_samples(args.samples) if args.samples else specs()
    bad = check(spec_list, jobs=args.jobs, verbose=args.verbose)
    for s, p in bad:
        print(f"FAIL {s.label()}")
        for line in p:
            print(f"     {line}")
    print(f"{len(spec_list)} kernel specialisations for sm_{CC[0]}{CC[1]}: {len(bad)} with problems "
          f"({time.perf_counter() - t0:.1f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
