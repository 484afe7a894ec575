"""The CUDA row kernels (softmax, log-softmax, layer norm, cross-entropy) against their NumPy
references, under Numba's simulator with shrunken row groups: every path of the launch plan is
taken at tiny sizes — short rows (a sub-warp group per row, several rows per block, a partial last
block), long rows held in the shared cache, long rows longer than the cache (re-read from global
memory), a row spread over several warps (the cross-warp stage) — on fresh random inputs and on
non-contiguous views."""
import importlib
import json
import os
import subprocess
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numba import cuda  # noqa: E402

from minitrans.kernels import reference as ref  # noqa: E402
from minitrans.kernels.cuda._util import simulated  # noqa: E402

softmax, layer_norm, cross_entropy = (importlib.import_module(f"minitrans.kernels.cuda.{m}")
                                      for m in ("softmax", "layer_norm", "cross_entropy"))
ROW_MODULES = (softmax, layer_norm, cross_entropy)

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
# 4 lanes per short row, 2 rows per block, 8 threads per long row; a short row holds 16 bytes
# (4 float32 / 2 float64 elements), a long row's cache 128 bytes (32 float32 / 16 float64)
SMALL = dict(LANES=4, ROWS=2, THREADS=8, SHORT_BYTES=16, LONG_BYTES=128)
# C = 1, 3: short rows; 17: long and cached (float32; longer than a float64 cache); 33, 65: longer
# than the cache. N = 3, 5 leaves the last block of short rows half empty.
SHAPES = [(1, 1), (3, 3), (5, 17), (3, 33)]
DTYPES = [np.float32, np.float64]


def _set(values):
    saved = [(m, k, getattr(m, k)) for m in ROW_MODULES for k in values if hasattr(m, k)]
    for m, k, _ in saved:
        setattr(m, k, values[k])
    return saved


@pytest.fixture(autouse=True)
def small_groups():
    saved = _set(SMALL)
    yield
    for m, k, v in saved:
        setattr(m, k, v)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def strided(a):
    """A device view of ``a`` whose rows are not contiguous (every other column of a wider array)."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    view = cuda.to_device(wide)[:, ::2]
    assert not view.is_c_contiguous()
    return view


def close(got, want, dtype):
    got = got.copy_to_host() if hasattr(got, "copy_to_host") else got
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, **TOL[dtype])


def test_the_plan_takes_every_path():
    """The shapes above do reach each configuration (so the tests below cover them)."""
    f32 = [softmax.config(c, 4) for _, c in SHAPES]
    assert [(g, c) for g, _, c in f32] == [(4, 4), (4, 4), (8, 32), (8, 32)]  # lanes per row, cached elements
    if simulated():
        assert [r for _, r, _ in f32] == [2, 2, 1, 1]  # rows per block (a GPU fills whole warps)
    _set(dict(LANES=32, ROWS=4, THREADS=256, SHORT_BYTES=4096, LONG_BYTES=16384))
    assert softmax.config(1024, 4) == (32, 4, 1024) and softmax.config(1025, 4) == (256, 1, 4096)
    assert softmax.config(512, 8) == (32, 4, 512) and softmax.config(513, 8) == (256, 1, 2048)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_and_log_softmax(rng, dtype, shape):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    for name in ("softmax", "log_softmax"):
        fwd, bwd = getattr(softmax, name + "_forward"), getattr(softmax, name + "_backward")
        y = fwd(dev(x)).copy_to_host()
        close(y, getattr(ref, name + "_forward")(x), dtype)
        close(bwd(dev(y), dev(dy)), getattr(ref, name + "_backward")(y, dy), dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # -inf - -inf, on purpose
def test_softmax_non_contiguous_and_infinite_entries(rng):
    x = (3 * rng.standard_normal((3, 33))).astype(np.float32)
    x[0, :5] = -np.inf  # masked entries first: they must not poison the running sum
    x[1, 7] = -np.inf
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for cols in (33, 3):  # long rows, then short ones (row 0 all -inf: NaN, as NumPy gives)
        xs, dys = x[:, :cols], dy[:, :cols]
        y = softmax.softmax_forward(strided(xs)).copy_to_host()
        want, want_log = ref.softmax_forward(xs), ref.log_softmax_forward(xs)
        assert np.isnan(want[0]).all() == (cols == 3)
        close(y, want, np.float32)
        close(softmax.log_softmax_forward(strided(xs)), want_log, np.float32)
        close(softmax.softmax_backward(strided(y), strided(dys)), ref.softmax_backward(y, dys), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm(rng, dtype, shape, affine=(True, True)):
    N, D = shape
    x = (rng.standard_normal(shape) + 1.0).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(D).astype(dtype) if affine[0] else None
    b = rng.standard_normal(D).astype(dtype) if affine[1] else None
    dw_, db_ = (dev(w) if w is not None else None), (dev(b) if b is not None else None)
    got = layer_norm.layer_norm_forward(dev(x), dw_, db_, 1e-5)
    want = ref.layer_norm_forward(x, w, b, 1e-5)
    for g, e in zip(got, want):
        close(g, e, dtype)
    _, mean, rstd = want
    got = layer_norm.layer_norm_backward(dev(dy), dev(x), dw_, dev(mean), dev(rstd))
    for g, e in zip(got, ref.layer_norm_backward(dy, x, w, mean, rstd)):
        assert (g is None) == (e is None)
        if e is not None:
            close(g, e, dtype)


@pytest.mark.parametrize("with_weight", [True, False])
def test_layer_norm_non_contiguous_without_bias(rng, with_weight):
    x = (rng.standard_normal((3, 17)) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(17).astype(np.float32) if with_weight else None
    wd = dev(w) if with_weight else None
    got = layer_norm.layer_norm_forward(strided(x), wd, None, 1e-5)
    want = ref.layer_norm_forward(x, w, None, 1e-5)
    for g, e in zip(got, want):
        close(g, e, np.float32)
    _, mean, rstd = want
    got = layer_norm.layer_norm_backward(strided(dy), strided(x), wd, dev(mean), dev(rstd))
    for g, e in zip(got, ref.layer_norm_backward(dy, x, w, mean, rstd)):
        assert (g is None) == (e is None)
        if e is not None:
            close(g, e, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_cross_entropy(rng, dtype, shape, ls):
    N, C = shape
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    t = rng.integers(0, C, size=N).astype(np.int64)
    if N > 1:
        t[1] = -100  # ignored
    dloss = rng.standard_normal(N).astype(dtype)
    xd = strided(x) if N > 2 else dev(x)
    loss, lse = cross_entropy.cross_entropy_forward(xd, dev(t), -100, ls)
    wloss, wlse = ref.cross_entropy_forward(x, t, -100, ls)
    close(loss, wloss, dtype)
    close(lse, wlse, dtype)
    got = cross_entropy.cross_entropy_backward(xd, dev(t), dev(wlse), dev(dloss), -100, ls)
    close(got, ref.cross_entropy_backward(x, t, wlse, dloss, -100, ls), dtype)


def test_a_row_spread_over_several_warps():
    """64 threads per long row: two warps, whose partials meet in shared memory."""
    _set(dict(THREADS=64))
    rng = np.random.default_rng(7)
    x = (3 * rng.standard_normal((2, 70))).astype(np.float32)
    x[0, :40] = -np.inf  # the first warp's lanes see only -inf
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y = softmax.softmax_forward(dev(x)).copy_to_host()
    close(y, ref.softmax_forward(x), np.float32)
    close(softmax.softmax_backward(dev(y), dev(dy)), ref.softmax_backward(y, dy), np.float32)
    x[0, :40] = 0.5
    want = ref.layer_norm_forward(x, None, None, 1e-5)
    for g, e in zip(layer_norm.layer_norm_forward(dev(x), None, None, 1e-5), want):
        close(g, e, np.float32)
    t = np.array([3, 69])
    close(cross_entropy.cross_entropy_forward(dev(x), dev(t), -100, 0.1)[0],
          ref.cross_entropy_forward(x, t, -100, 0.1)[0], np.float32)


# ------------------------------------------------------------------ the design, read from sm_90 code
_FACTS = r'''
import json, re, subprocess, sys, tempfile
from pathlib import Path
from numba import cuda
from minitrans.kernels.cuda import guard
from minitrans.kernels.cuda.guard_specs import specs

guard._allow_device_compile_without_gpu()
wanted = {("softmax", 0), ("softmax", 1), ("layer_norm", 0), ("layer_norm", 1), ("cross_entropy", 0),
          ("matmul", 0)}
out = []
for s in specs():
    if s.dtype != "float32" or (s.module, s.index) not in wanted:
        continue
    ptx, _ = cuda.compile_ptx(s.kernel().py_func, s.argtypes, cc=guard.CC)
    facts = dict(module=s.module, index=s.index, fargs=[str(a) for a in s.fargs],
                 shfl=len(re.findall(r"\bshfl\.sync\.bfly", ptx)), barriers=len(re.findall(r"\bbar\.sync", ptx)),
                 f64=len(guard._F64.findall(ptx)), depot=sum(int(n) for n in guard._DEPOT.findall(ptx)),
                 div64=len(re.findall(r"\b(?:div|rem)\.[su]64", ptx)), fma=len(re.findall(r"\bfma\.rn\.f32", ptx)))
    with tempfile.TemporaryDirectory() as td:
        (Path(td) / "k.ptx").write_text(ptx)
        r = subprocess.run([guard._ptxas(), "-arch=sm_90", "-v", str(Path(td) / "k.ptx"), "-o",
                            str(Path(td) / "k.cubin")], capture_output=True, text=True)
    stack = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores", r.stderr)
    smem = re.search(r"(\d+) bytes smem", r.stderr)
    facts.update(local=int(stack.group(1)) + int(stack.group(2)),
                 registers=int(re.search(r"Used (\d+) registers", r.stderr).group(1)),
                 smem=int(smem.group(1)) if smem else 0)
    out.append(facts)
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def sm90_facts():
    """Facts of the float32 row kernels and matmul compiled for sm_90 by the real compiler (in a
    subprocess: this one runs the simulator, which compiles nothing)."""
    pytest.importorskip("nvidia.cuda_nvcc", reason="the cuda extra's compiler wheels are not installed")
    r = subprocess.run([sys.executable, "-c", _FACTS], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, NUMBA_ENABLE_CUDASIM="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_row_kernels_reduce_with_warp_shuffles_in_registers(sm90_facts):
    rows = [f for f in sm90_facts if f["module"] != "matmul"]
    assert len(rows) == 10, rows  # 5 kernels x (short rows, long rows)
    for f in rows:
        assert f["shfl"] >= 5, f        # a butterfly of log2(32) = 5 shuffles at least
        assert f["f64"] == 0, f         # float32 throughout
        assert f["depot"] == 0 and f["local"] == 0, f  # no local memory, no spills
        assert f["div64"] == 0, f
        short = int(f["fargs"][0]) <= 32
        # a short row is one warp: its reductions need no barrier; a long row's warps meet in shared memory
        assert (f["barriers"] == 0) == short, f


def test_matmul_tile_is_registers_and_padded_shared_memory(sm90_facts):
    tilings = [f for f in sm90_facts if f["module"] == "matmul"]
    assert [int(f["fargs"][1]) for f in tilings] == [128, 64], tilings  # big and half-size tiles
    for f in tilings:
        tm, tn, tk, rm, rn = (int(v) for v in f["fargs"][1:])
        assert f["local"] == 0 and f["depot"] == 0, f  # the micro-tile and its fragments are registers
        assert f["fma"] >= rm * rn, f                    # one rank-1 update: rm * rn fused multiply-adds
        assert f["div64"] == 0, f                        # 32-bit index math: no 64-bit division anywhere
        assert f["f64"] == 0, f
        assert f["smem"] == 4 * tk * (tm + 32 // tk + tn + 32 // tk), f  # two slabs, rows padded
        assert f["barriers"] >= 1 and f["registers"] <= 255, f
