"""Compile guard: every kernel the CUDA backend can launch, in every dtype it is launched
with, compiled for a real GPU (sm_90) with the real NVVM compiler — on a machine without one.

Run ``python -m minitrans.kernels.cuda.guard`` (exit status 1 on any problem). It needs the
``cuda`` extra (numba-cuda with its ``cu12`` wheels: NVVM and ``ptxas`` come from PyPI, no
driver or GPU needed) and refuses to run under ``NUMBA_ENABLE_CUDASIM=1``: the simulator runs
kernels as Python and hides exactly what a GPU compiler rejects (a local array whose size is
not a compile-time constant, an atomic on bool, ...).

For each specialisation in ``specs()`` it runs ``numba.cuda.compile_ptx(..., cc=(9, 0))``
and then ``ptxas -v`` (when found) on the PTX, and reports:

* a compile error (typing or lowering);
* any ``.f64`` instruction in a float32 specialisation, unless its ``Spec`` entry carries a
  reason (``Spec.f64_reason``): float32 kernels must not run double-precision math (a Python float
  literal, ``math.inf`` or a float64 scalar argument silently promotes the arithmetic);
* per-thread local memory — the PTX ``__local_depot`` stack plus ``ptxas``' stack frame and
  spill stores — above the kernel's budget: ``LOCAL_BUDGET`` (0 bytes: registers only) unless
  its ``Spec`` entry documents more. The attention kernels keep their per-thread rows in local arrays
  of the padded head dim; their budget is exactly those arrays (see ``_attention_specs``).

``specs()`` lists the kernels by the factories and dtypes the host wrappers use; the
simulator test ``tests/cuda/test_step_cost.py`` records the kernels a training step really
launches (``_util.record_launches``) and checks each one is listed here.

The findings are cached on disk (``$MINITRANS_PTX_CACHE``, default ``~/.cache/minitrans/ptx``)
under a hash of the kernel's module and ``_util.py``, the ``Spec`` entry and the numba-cuda
version, so a second run compiles only the modules that changed.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
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

import numpy as np

CC = (9, 0)
LOCAL_BUDGET = 0  # bytes of per-thread local memory a kernel may use unless its spec says otherwise
_PKG = "minitrans.kernels.cuda"
_HERE = Path(__file__).resolve().parent

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
INTS = (np.dtype(np.int64), np.dtype(np.int32))
NUMS = FLOATS + INTS
ALL = NUMS + (np.dtype(np.bool_),)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One kernel specialisation: ``getattr(module, factory)(*fargs)[index]`` compiled for
    ``argtypes``. ``dtype`` is the compute dtype (float32 specs are checked for ``.f64``)."""

    module: str
    factory: str
    fargs: tuple | None
    index: int | None
    argtypes: tuple
    dtype: str
    f64_reason: str | None = None
    local_budget: int = LOCAL_BUDGET

    def kernel(self):
        obj = getattr(_mod(self.module), self.factory)
        if self.fargs is not None:
            obj = obj(*self.fargs)
        if self.index is not None:
            obj = obj[self.index]
        return obj

    def label(self) -> str:
        from ._util import _kernel_name

        extra = "" if self.fargs is None else "(" + ", ".join(map(str, self.fargs)) + ")"
        return f"{_kernel_name(self.kernel())}{extra}[{', '.join(map(str, self.argtypes))}]"


# ---------------------------------------------------------------- the specialisations
def _types():
    from numba import types as T

    from ._util import MAX_DIMS, nb_dtype

    def A(dt, nd=1):
        return T.Array(nb_dtype(dt), nd, "C")

    def S(dt):
        return nb_dtype(dt)

    return A, S, T.int64, T.boolean, T.UniTuple(T.int64, MAX_DIMS)


def _mod(name):
    """A kernel module (``from . import x`` could give the function of the same name), or a
    samples module loaded by ``load_samples``."""
    if name in sys.modules and name.startswith("_guard_samples"):
        return sys.modules[name]
    return importlib.import_module(f"{_PKG}.{name}")


def _cast_reason(src, dst):
    if np.dtype(np.float64) in (np.dtype(src), np.dtype(dst)) and np.dtype(src) != np.dtype(dst):
        return "a cast from or to float64 converts in double precision by definition"
    return None


def _elementwise_specs():
    E = _mod("elementwise")

    A, S, I, B, T6 = _types()
    out = []

    def m(op, src, dst):
        out.append(Spec("elementwise", "_map_kernel", (op, src), None, (A(dst), A(src), I, T6, T6, B), src.name,
                        _cast_reason(src, dst)))

    def z(op, dt, res):
        out.append(Spec("elementwise", "_zip_kernel", (op, dt), None,
                        (A(res), A(dt), A(dt), I, T6, T6, T6, B), dt.name))

    for dt in FLOATS:
        for op in E.UNARY:
            m(op, dt, dt)
    for dt in INTS:
        for op in ("neg", "abs", "sign", "square"):
            m(op, dt, dt)
    for src in ALL:  # astype / operand casts
        for dst in NUMS:
            if src != dst:
                m("identity", src, dst)
    arith = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
    for dt in NUMS:
        for op in arith:
            z(op, dt, np.dtype(np.float64) if (op == "div" and dt.kind == "i") else dt)
    for op in ("add", "mul", "maximum", "minimum"):
        z(op, np.dtype(np.bool_), np.dtype(np.bool_))
    for dt in FLOATS:
        for op in ("relu_backward", "sigmoid_backward", "tanh_backward", "gelu_backward"):
            z(op, dt, dt)
    for dt in ALL:
        for op in sorted(E.COMPARISONS):
            z(op, dt, np.dtype(np.bool_))
    for dt in NUMS:
        out.append(Spec("elementwise", "_clamp_kernel", (dt,), None,
                        (A(dt), A(dt), I, T6, T6, T6, S(dt), S(dt), B, B), dt.name))
    for dt in ALL:
        out.append(Spec("elementwise", "_where_kernel", None, None,
                        (A(dt), A(np.bool_), A(dt), A(dt), I, T6, T6, T6, T6), dt.name))
    return out


def _array_specs():
    A, S, I, B, T6 = _types()
    bool_ = np.dtype(np.bool_)
    i64 = np.dtype(np.int64)
    out = []
    for dt in ALL:
        out.append(Spec("array", "_fill_kernel", None, None, (A(dt), S(dt), I), dt.name))
        out.append(Spec("array", "_gather_kernel", None, None, (A(dt), A(dt), A(i64), I, T6, T6, T6, S(dt)), dt.name))
        out.append(Spec("array", "_scatter_set_kernel", None, None,
                        (A(dt), A(dt), A(i64), I, T6, T6, T6, T6), dt.name))
        for src in ALL:
            out.append(Spec("array", "_copy_kernel", None, None, (A(dt), A(src), I, T6, T6, T6), src.name,
                            _cast_reason(src, dt)))
    for dt in NUMS:
        out.append(Spec("array", "_arange_kernel", (dt,), None, (A(dt), S(dt), S(dt), I), dt.name))
        out.append(Spec("array", "_scatter_add_kernel", None, None,
                        (A(dt), A(dt), A(i64), I, T6, T6, T6, T6), dt.name))
    out.append(Spec("array", "_lmap", ("not",), None, (A(bool_), A(bool_), I, T6, T6), "bool"))
    for dt in FLOATS:
        out.append(Spec("array", "_lmap", ("isfinite",), None, (A(bool_), A(dt), I, T6, T6), dt.name))
        out.append(Spec("array", "_dropout_kernel", None, None, (A(dt), I, I, I, I, S(dt), S(dt)), dt.name))
    for op in ("and", "or", "xor"):
        out.append(Spec("array", "_lzip", (op,), None, (A(bool_), A(bool_), A(bool_), I, T6, T6, T6), "bool"))
    from numba import types as T

    KA = _mod("array")
    for dt in FLOATS:
        many = T.UniTuple(A(dt), KA.MANY)
        out.append(Spec("array", "_copy_many_kernel", None, None, (many, many, T.UniTuple(I, KA.MANY), I), dt.name))
    for dt in INTS:
        out.append(Spec("array", "_index_linear_kernel", None, None, (A(i64), A(dt), I, I, I, T6, T6), dt.name))
    return out


def _reduce_specs():
    R = _mod("reduce")

    A, S, I, B, T6 = _types()
    out = []
    for dt in (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)):
        for code in sorted(set(R._OPS.values())):
            out.append(Spec("reduce", "_reduce_kernel", (code, R.THREADS, dt), None,
                            (A(dt), A(dt), I, S(dt), T6, T6, T6, T6), dt.name))
    for dt in ALL:
        out.append(Spec("reduce", "_argmax_kernel", (R.THREADS, dt), None,
                        (A(np.int64), A(dt), I, T6, T6, I), dt.name))
    return out


def _nn_specs():
    softmax, cross_entropy, layer_norm, matmul = (_mod(m) for m in ("softmax", "cross_entropy", "layer_norm",
                                                                      "matmul"))

    A, S, I, B, T6 = _types()
    i64 = np.dtype(np.int64)
    out = []
    for dt in FLOATS:
        n = dt.name
        f = (softmax.THREADS, dt)
        out.append(Spec("softmax", "_kernels", f, 0, (A(dt, 2), A(dt, 2), B), n))
        out.append(Spec("softmax", "_kernels", f, 1, (A(dt, 2), A(dt, 2), A(dt, 2), B), n))
        f = (cross_entropy.THREADS, dt)
        out.append(Spec("cross_entropy", "_kernels", f, 0, (A(dt), A(dt), A(dt, 2), A(i64), I, S(dt)), n))
        out.append(Spec("cross_entropy", "_kernels", f, 1,
                        (A(dt, 2), A(dt, 2), A(i64), A(dt), A(dt), I, S(dt)), n))
        f = (layer_norm.THREADS, dt)
        out.append(Spec("layer_norm", "_kernels", f, 0,
                        (A(dt, 2), A(dt), A(dt), A(dt, 2), A(dt), A(dt), B, B, S(dt)), n))
        out.append(Spec("layer_norm", "_kernels", f, 1, (A(dt, 2), A(dt, 2), A(dt, 2), A(dt), B, A(dt), A(dt)), n))
        out.append(Spec("layer_norm", "_kernels", f, 2, (A(dt), A(dt), A(dt, 2), A(dt, 2), A(dt), A(dt), B), n))
        out.append(Spec("adam", "_adam_kernel", (dt,), None, (A(dt),) * 4 + (S(dt),) * 7 + (B,), n))
        out.append(Spec("embedding", "_gather", None, None, (A(dt, 2), A(dt, 2), A(i64), I, I, S(dt)), n))
        out.append(Spec("embedding", "_zero", None, None, (A(dt),), n))
        out.append(Spec("embedding", "_scatter_add", None, None, (A(dt, 2), A(dt, 2), A(i64), I, I), n))
    clip = _mod("clip")
    for dt in FLOATS:
        out.append(Spec("clip", "_clip_kernel", (clip.THREADS, dt), None, (A(dt), A(dt), I, S(dt), B, S(dt)), dt.name))
    for dt in NUMS:
        f = (dt, matmul.TILE_M, matmul.TILE_N, matmul.TILE_K, matmul.MICRO_M, matmul.MICRO_N)
        out.append(Spec("matmul", "_matmul_kernel", f, 0, (A(dt), A(dt), A(dt), I, I, I, T6, T6, T6, I, I, I, I),
                        dt.name))
    return out


def _attention_specs():
    AT = _mod("attention")

    A, S, I, B, T6 = _types()
    out = []
    for dt in FLOATS:
        isz = dt.itemsize
        for dpad in (16, 32, 64, 128, 256):
            bq, bk = AT.tiles(dpad, isz)
            f = (dt, bq, bk, dpad)
            bias = (A(dt), I, I, I, B, B, S(dt))
            # local budget = the per-thread arrays each kernel declares (rows of the padded head dim)
            out.append(Spec("attention", "_kernels", f, 0, (A(dt, 3), A(dt, 2), A(dt, 3), A(dt, 3), A(dt, 3)) + bias,
                            dt.name, local_budget=(2 * dpad + bk) * isz))
            out.append(Spec("attention", "_kernels", f, 1,
                            (A(dt, 3),) * 4 + (A(dt, 2), A(dt, 3), A(dt, 2)) + bias,
                            dt.name, local_budget=3 * dpad * isz))
            out.append(Spec("attention", "_kernels", f, 2,
                            (A(dt, 3),) * 5 + (A(dt, 2), A(dt, 3), A(dt, 2)) + bias,
                            dt.name, local_budget=4 * dpad * isz))
            if dpad == 16:  # rowdot does not depend on the tiles
                out.append(Spec("attention", "_kernels", f, 3, (A(dt, 2), A(dt, 3), A(dt, 3)), dt.name))
    return out


def specs() -> list[Spec]:
    """Every kernel specialisation the CUDA backend can launch."""
    return _elementwise_specs() + _array_specs() + _reduce_specs() + _nn_specs() + _attention_specs()


def launch_keys(spec_list=None) -> set:
    """``(kernel name, argument types)`` of every spec: what ``_util.record_launches`` records
    for a launch of that specialisation."""
    from ._util import _kernel_name

    return {(_kernel_name(s.kernel()), tuple(str(t) for t in s.argtypes)) for s in (spec_list or specs())}


# ---------------------------------------------------------------- compiling and checking
def _numba_cuda_version() -> str:
    from importlib.metadata import version

    return version("numba-cuda")


def _sources_hash(module: str) -> str:
    """Hash of a spec's kernel module and the shared helpers it compiles with."""
    h = hashlib.sha256()
    mod = _mod(module)
    for p in (Path(mod.__file__), _HERE / "_util.py"):
        h.update(p.read_bytes())
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
    import numba.cuda.dispatcher as D

    class _Device:
        compute_capability = CC

    D.get_current_device = lambda: _Device()


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
