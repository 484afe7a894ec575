"""The compile guard (``python -m minitrans.kernels.cuda.guard``): every kernel the CUDA
backend launches compiles for sm_90 with the real NVVM compiler, float32 kernels have no
double-precision instruction and no kernel goes over its local-memory budget; the guard
catches each of those faults in deliberately bad kernels. (That its list covers every kernel
a training step really launches is checked in test_step_cost.py, on the step it measures.)

The guard runs in a subprocess with ``NUMBA_ENABLE_CUDASIM=0``: the simulator (set for this
test process by the conftest) would hide exactly the faults the guard exists to find."""
import os
import subprocess
import sys
import textwrap



def _guard(*args, cache=None):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    if cache is not None:
        env["MINITRANS_PTX_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "minitrans.kernels.cuda.guard", *args], capture_output=True,
                          text=True, env=env, timeout=1200)


def test_every_backend_kernel_compiles_for_sm90_in_float32_without_f64():
    r = _guard()
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    last = r.stdout.strip().splitlines()[-1]
    assert "for sm_90: 0 with problems" in last, last
    assert int(last.split()[0]) >= 200, last  # the whole list, not an empty one


_BAD = '''
import math

import numpy as np
from numba import cuda, types

from minitrans.kernels.cuda.guard import Spec

F32 = types.Array(types.float32, 1, "C")
B1 = types.Array(types.boolean, 1, "C")


@cuda.jit
def runtime_local(out, n):
    buf = cuda.local.array(n, types.float32)  # size from a runtime argument: not a constant
    buf[0] = 1
    out[0] = buf[0]


@cuda.jit
def exp_in_double(out, x):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = math.exp(np.float64(x[i]))  # really double precision in a float32 kernel


@cuda.jit
def atomic_on_bool(out, x):
    cuda.atomic.add(out, 0, x[0])  # atomics take no bool


@cuda.jit
def stack_array(out, x, k):
    buf = cuda.local.array(64, types.float32)  # constant size, dynamically indexed: local memory
    for j in range(64):
        buf[j] = x[j]
    out[0] = buf[k]


@cuda.jit
def clean(out, x):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = x[i] * 0.5  # the literal folds to float32: no .f64


def guard_specs():
    return [Spec("_guard_samples", "runtime_local", None, None, (F32, types.int64), "float32"),
            Spec("_guard_samples", "exp_in_double", None, None, (F32, F32), "float32"),
            Spec("_guard_samples", "atomic_on_bool", None, None, (B1, B1), "bool"),
            Spec("_guard_samples", "stack_array", None, None, (F32, F32, types.int64), "float32"),
            Spec("_guard_samples", "clean", None, None, (F32, F32), "float32")]
'''


def test_guard_fails_on_bad_kernels_and_passes_a_clean_one(tmp_path):
    samples = tmp_path / "samples.py"
    samples.write_text(textwrap.dedent(_BAD))
    r = _guard("--samples", str(samples), "--jobs", "1", cache=tmp_path / "cache")
    assert r.returncode == 1, r.stdout + r.stderr
    report = {}
    for line in r.stdout.splitlines():
        if line.startswith("FAIL "):
            name = line.split()[1].split("[")[0]
            report[name] = ""
        elif line.startswith("     ") and report:
            report[name] += line.strip()
    assert set(report) == {"_guard_samples.runtime_local", "_guard_samples.exp_in_double",
                           "_guard_samples.atomic_on_bool", "_guard_samples.stack_array"}, r.stdout
    assert "compile error" in report["_guard_samples.runtime_local"]
    assert "compile error" in report["_guard_samples.atomic_on_bool"]
    assert ".f64" in report["_guard_samples.exp_in_double"]
    assert "local memory" in report["_guard_samples.stack_array"]
    assert "0 with problems" not in r.stdout and "5 kernel specialisations" in r.stdout
