"""The contiguous fast path of the elementwise, copy and cast kernels: taken when every operand is
C-contiguous with the output's shape (or one element, or a row repeated along it), it indexes
flat with 32-bit math and no stride decoding. Shown by design on the sm_90 PTX (no 64-bit
division or remainder, which the strided kernel has), and by results against NumPy and the
kernel each case launches."""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minitrans.backends.cuda import CUDABackend as xp
from minitrans.kernels.cuda._util import counters

_PTX_SCRIPT = textwrap.dedent('''
    import json, re
    from numba import cuda
    from minitrans.kernels.cuda import guard
    from minitrans.kernels.cuda.guard_specs import specs

    guard._allow_device_compile_without_gpu()
    wanted = {("_map_contig_kernel", ("exp", "float32")), ("_zip_contig_kernel", ("add", "float32")),
              ("_map_contig_kernel", ("identity", "float32")), ("_zip_kernel", ("add", "float32"))}
    found = {}
    for s in specs():
        key = (s.factory, tuple(str(a) for a in (s.fargs or ())))
        if key in wanted and key not in found and str(s.argtypes[0]).startswith("array(float32"):
            ptx, _ = cuda.compile_ptx(s.kernel().py_func, s.argtypes, cc=(9, 0))
            body = ptx[ptx.index(".entry"):]
            found[key] = {"div64": len(re.findall(r"\\b(?:div|rem)\\.[su]64\\b", body)),
                          "wide_index": len(re.findall(r"\\bmul\\.wide\\.u32\\b", body))}
    print(json.dumps({f"{k[0]}:{k[1][0]}": v for k, v in found.items()}))
''')


def test_fast_path_kernels_have_no_64bit_division_on_sm90():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    r = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(got) == {"_map_contig_kernel:exp", "_zip_contig_kernel:add", "_map_contig_kernel:identity",
                        "_zip_kernel:add"}, got
    assert got["_zip_kernel:add"]["div64"] > 0, got  # the strided kernel decodes its index per element
    for name in ("_map_contig_kernel:exp", "_zip_contig_kernel:add", "_map_contig_kernel:identity"):
        assert got[name]["div64"] == 0, (name, got)
        assert got[name]["wide_index"] > 0, (name, got)  # 32-bit indices widened only for the address


def _run(fn):
    counters.reset()
    r = xp.to_numpy(fn())
    return r, set(counters.launched)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contiguous_operands_take_the_fast_path(dtype):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)
    da, db = xp.from_numpy(a), xp.from_numpy(b)
    got, kernels = _run(lambda: da * db)
    np.testing.assert_array_equal(got, a * b)
    assert kernels == {"elementwise.zip_contig_kernel"}
    2.5 - da   # the scalar's cached 0-d device constant is filled on first use
    got, kernels = _run(lambda: 2.5 - da)   # a scalar operand is read at step 0
    np.testing.assert_array_equal(got, dtype(2.5) - a)
    assert kernels == {"elementwise.zip_contig_kernel"}
    got, kernels = _run(lambda: db[1:2, 3:4] / da)   # a one-element view, broadcast
    np.testing.assert_array_equal(got, b[1:2, 3:4] / a)
    assert kernels == {"elementwise.zip_contig_kernel"}
    got, kernels = _run(lambda: da + db[2])   # a bias row repeated along the rows
    np.testing.assert_array_equal(got, a + b[2])
    assert kernels == {"elementwise.zip_contig_kernel"}
    got, kernels = _run(lambda: xp.reshape(db[:1], (1, 1, 5)) * xp.reshape(da, (3, 1, 5)))
    np.testing.assert_array_equal(got, b[:1].reshape(1, 1, 5) * a.reshape(3, 1, 5))
    assert kernels == {"elementwise.zip_contig_kernel"}
    got, kernels = _run(lambda: xp.exp(da))
    np.testing.assert_allclose(got, np.exp(a), rtol=1e-6)
    assert kernels == {"elementwise.map_contig_kernel"}
    got, kernels = _run(lambda: da.astype(np.int64))   # a cast
    np.testing.assert_array_equal(got, a.astype(np.int64))
    assert kernels == {"elementwise.map_contig_kernel"}
    got, kernels = _run(lambda: xp.copy(da))
    np.testing.assert_array_equal(got, a)
    assert kernels == {"elementwise.map_contig_kernel"}


def test_strided_or_broadcast_operands_take_the_strided_kernels():
    a = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    col = np.arange(3.0, dtype=np.float32).reshape(3, 1)
    da, dcol = xp.from_numpy(a), xp.from_numpy(col)
    xp.transpose(da) + 1
    got, kernels = _run(lambda: xp.transpose(da) + 1)
    np.testing.assert_array_equal(got, a.T + 1)
    assert kernels == {"elementwise.zip_kernel"}
    got, kernels = _run(lambda: da * dcol)   # a column broadcast along the rows
    np.testing.assert_array_equal(got, a * col)
    assert kernels == {"elementwise.zip_kernel"}
    got, kernels = _run(lambda: xp.exp(da[:, ::2]))
    np.testing.assert_allclose(got, np.exp(a[:, ::2]), rtol=1e-6)
    assert kernels == {"elementwise.map_kernel"}
    got, kernels = _run(lambda: xp.copy(xp.transpose(da)))   # into a contiguous array: source decoded only
    np.testing.assert_array_equal(got, a.T)
    assert kernels == {"elementwise.map_kernel"}
    dst = xp.zeros((3, 6), np.float32)

    def copy_into_a_view():
        dst[:, 1:5] = da
        return dst
    got, kernels = _run(copy_into_a_view)   # a strided destination: the copy kernel decodes both
    np.testing.assert_array_equal(got[:, 1:5], a)
    assert kernels == {"array._copy_kernel"}
    i = xp.from_numpy(np.arange(6).reshape(2, 3))   # integer inputs: the strided kernel
    i * 3
    got, kernels = _run(lambda: i * 3)
    np.testing.assert_array_equal(got, np.arange(6).reshape(2, 3) * 3)
    assert kernels == {"elementwise.zip_kernel"}


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the simulator's NumPy scalars: inf * 0
def test_a_bool_mask_times_a_float_array_is_one_launch():
    g = np.array([[1.5, np.nan, -2.0], [np.inf, 3.0, 0.5]], np.float32)
    m = np.array([[True, False, False], [False, True, True]])
    dg, dm = xp.from_numpy(g), xp.from_numpy(m)
    with np.errstate(invalid="ignore"):
        want = g * m   # NumPy: nan * False and inf * False are nan
    for fn, ref in ((lambda: dg * dm, want), (lambda: dm * dg, want),
                    (lambda: xp.transpose(dg) * xp.transpose(dm), want.T)):
        got, kernels = _run(fn)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)
        assert len(kernels) == 1 and counters.launches == 1, kernels   # no cast of the mask first
