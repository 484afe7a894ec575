"""minitrans.threads: one call sets Numba's and OpenBLAS's thread counts; importing minitrans changes
neither, nor Numba's threading layer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numba
import pytest

import minitrans as mt
from minitrans import threads


def _fresh(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a new interpreter (Numba's pool not started yet); it prints one JSON line."""
    full = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    full.update(env or {})
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=full, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_changes_no_thread_setting():
    r = _fresh("""
        import json, os, numba, numpy
        from minitrans.threads import get_blas_num_threads
        before = dict(layer=numba.config.THREADING_LAYER, env=os.environ.get("NUMBA_THREADING_LAYER"),
                      blas=get_blas_num_threads())
        import minitrans, minitrans.nn, minitrans.optim
        from numba.np.ufunc import parallel
        after = dict(layer=numba.config.THREADING_LAYER, env=os.environ.get("NUMBA_THREADING_LAYER"),
                     blas=get_blas_num_threads())
        print(json.dumps(dict(before=before, after=after, started=parallel._is_initialized)))
    """, {"OPENBLAS_NUM_THREADS": "1"})
    assert r["before"] == r["after"]
    assert r["after"]["env"] is None and r["after"]["layer"] == "default"
    assert r["after"]["blas"] in (1, None)
    assert r["started"] is False          # importing does not start Numba's pool either


def test_set_num_threads_sets_numba_and_blas():
    before = mt.get_num_threads()
    try:
        mt.set_num_threads(1)
        assert mt.get_num_threads() == 1 == numba.get_num_threads()
        if threads.get_blas_num_threads() is not None:
            assert threads.get_blas_num_threads() == 1
    finally:
        mt.set_num_threads(before)
    assert mt.get_num_threads() == before


def test_num_threads_context_restores_both_pools():
    limit = numba.config.NUMBA_NUM_THREADS
    mt.set_num_threads(limit)
    blas_before = threads.get_blas_num_threads()
    with mt.num_threads(1) as n:
        assert n == 1 and mt.get_num_threads() == 1
        if blas_before is not None:
            assert threads.get_blas_num_threads() == 1
    assert mt.get_num_threads() == limit
    assert threads.get_blas_num_threads() == blas_before
    with pytest.raises(KeyError):          # restored on an exception too
        with mt.num_threads(1):
            raise KeyError("x")
    assert mt.get_num_threads() == limit


@pytest.mark.parametrize("bad, err, words", [(0, ValueError, "between 1 and"), (10_000, ValueError, "NUMBA_NUM_THREADS"),
                                             (1.5, TypeError, "must be an int"), ("2", TypeError, "got str"),
                                             (True, TypeError, "got bool")])
def test_bad_thread_counts_name_the_problem(bad, err, words):
    before = mt.get_num_threads()
    with pytest.raises(err, match=words):
        mt.set_num_threads(bad)
    with pytest.raises(err, match=words):
        with mt.num_threads(bad):
            pass
    assert mt.get_num_threads() == before


def test_threading_layer_is_an_explicit_choice_before_the_pool_starts():
    r = _fresh("""
        import json, numba, numpy as np
        import minitrans as mt
        before = mt.threading_layer()
        mt.set_threading_layer("workqueue")
        mt.set_num_threads(1)                         # starts the pool on the chosen layer
        running = mt.threading_layer()
        mt.set_threading_layer("workqueue")           # the same layer again: allowed
        try:
            mt.set_threading_layer("omp")
            err = None
        except RuntimeError as e:
            err = str(e)
        print(json.dumps(dict(before=before, running=running, err=err)))
    """)
    assert r["before"] is None
    assert r["running"] == "workqueue"
    assert r["err"] is not None and "workqueue" in r["err"] and "before the first parallel kernel" in r["err"]
    with pytest.raises(ValueError, match="unknown threading layer"):
        mt.set_threading_layer("fast")


def test_retain_freed_memory_stops_page_faults_on_reused_temporaries():
    # the same temporaries made twice: without the setting glibc hands the freed blocks back to the
    # OS and the second round page-faults them in again; with it the second round reuses them
    code = """
        import json, resource, sys, numpy as np
        import minitrans as mt
        ok = mt.backends.cpu.retain_freed_memory() if sys.argv[1] == "1" else None
        def round_():
            arrays = [np.ones(1_000_000 + 4096 * i, np.float32) for i in range(12)]   # ~4 MiB each
            del arrays
        round_()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        round_()
        print(json.dumps(dict(ok=ok, faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)))
    """
    outs = {}
    for flag in ("0", "1"):
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), flag], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        outs[flag] = json.loads(p.stdout.strip().splitlines()[-1])
    if outs["1"]["ok"] is False:
        pytest.skip("this C library has no glibc mallopt")
    pages = 12 * 4_000_000 // 4096
    assert outs["0"]["faults"] > pages // 2          # each array's pages faulted in again
    assert outs["1"]["faults"] < pages // 10         # reused
    with pytest.raises(ValueError, match="non-negative number of bytes"):
        mt.backends.cpu.retain_freed_memory(-1)


# The probe reads OpenBLAS's thread count straight from the library NumPy loaded (not through
# minitrans.threads, the code under test), and records it at every np.matmul the kernels make.
_PROBE = """
    import ctypes, json, os, numpy as np, numba

    def blas_get():
        paths = sorted({ln.split()[-1] for ln in open("/proc/self/maps") if "openblas" in ln.lower()})
        for path in paths:
            lib = ctypes.CDLL(path)
            for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                         "openblas_get_num_threads"):
                if hasattr(lib, name):
                    return getattr(lib, name)
        return lambda: None

    blas_count = blas_get()
    seen = set()
    real_matmul = np.matmul

    def spying_matmul(*args, **kwargs):
        seen.add(blas_count())
        return real_matmul(*args, **kwargs)

    np.matmul = spying_matmul

    def snapshot():
        return dict(env=dict(os.environ), layer=numba.config.THREADING_LAYER, blas=blas_count())
"""


@pytest.mark.parametrize("causal", [False, True])
def test_cpu_attention_leaves_every_thread_setting_as_it_found_it(causal):
    # tiled attention (T above the small-sequence path) on two Numba threads, OpenBLAS on two:
    # nothing it does may change the environment, Numba's layer, or OpenBLAS's count, even
    # for the duration of the call (another thread of the program may be calling BLAS)
    r = _fresh(_PROBE + f"""
    before = snapshot()
    import minitrans as mt
    import minitrans.nn.functional as F
    rng = np.random.default_rng(0)
    q, k, v = (mt.tensor(rng.standard_normal((2, 2, 300, 16)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, is_causal={causal})
    (out * out).sum().backward()
    after = snapshot()
    print(json.dumps(dict(before=before, after=after, seen=sorted(seen, key=str),
                          finite=bool(np.isfinite(q.grad.numpy()).all()))))
    """, {"NUMBA_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"})
    assert r["finite"]
    assert r["after"]["env"] == r["before"]["env"]
    assert r["after"]["layer"] == r["before"]["layer"] == "default"
    assert r["after"]["blas"] == r["before"]["blas"]
    if r["before"]["blas"] is not None:
        assert r["before"]["blas"] == 2
        assert r["seen"] == [2]                  # never lowered while the kernels ran


def test_large_cpu_matmul_leaves_blas_threads_alone():
    r = _fresh(_PROBE + """
    before = snapshot()
    import minitrans as mt
    a = mt.tensor(np.ones((512, 256), np.float32), requires_grad=True)
    b = mt.tensor(np.ones((256, 256), np.float32), requires_grad=True)
    (a @ b).sum().backward()
    after = snapshot()
    print(json.dumps(dict(before=before, after=after, seen=sorted(seen, key=str),
                          right=bool((a.grad.numpy() == 256).all()))))
    """, {"NUMBA_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"})
    assert r["right"]
    assert r["after"] == r["before"]
    if r["before"]["blas"] is not None:
        assert r["seen"] == [2]


def test_blas_thread_count_is_set_only_when_asked():
    if threads.get_blas_num_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS that minitrans.threads can reach")
    before = threads.get_blas_num_threads()
    try:
        threads.set_blas_num_threads(2)
        assert threads.get_blas_num_threads() == 2 and not threads.blas_is_single_threaded()
        with threads.limit_blas_threads(1) as n:
            assert n == 1 and threads.get_blas_num_threads() == 1 and threads.blas_is_single_threaded()
            with threads.limit_blas_threads(3):
                assert threads.get_blas_num_threads() == 3
            assert threads.get_blas_num_threads() == 1
        assert threads.get_blas_num_threads() == 2
        with pytest.raises(KeyError):                 # restored on an exception too
            with threads.limit_blas_threads(1):
                raise KeyError("x")
        assert threads.get_blas_num_threads() == 2
    finally:
        threads.set_blas_num_threads(before)
    for bad, err, words in [(0, ValueError, "at least 1"), (1.5, TypeError, "must be an int"),
                            (True, TypeError, "got bool")]:
        with pytest.raises(err, match=words):
            threads.set_blas_num_threads(bad)
        with pytest.raises(err, match=words):
            with threads.limit_blas_threads(bad):
                pass
    assert threads.get_blas_num_threads() == before


@pytest.mark.parametrize("causal", [False, True])
def test_tiled_attention_splits_over_minitrans_threads_once_blas_is_single_threaded(causal):
    # the explicit setting the kernels rely on for speed: with it, the tiles run on the worker pool
    # (the caller's thread too), every BLAS call on one thread, and the result is the reference's
    r = _fresh(_PROBE + f"""
    import threading
    import minitrans as mt
    from minitrans.kernels import cpu, reference
    names = set()
    inner_matmul = np.matmul

    def naming_matmul(*args, **kwargs):
        names.add(threading.current_thread().name.split("_")[0])
        return inner_matmul(*args, **kwargs)

    np.matmul = naming_matmul
    mt.set_num_threads(2)
    mt.threads.set_blas_num_threads(1)
    rng = np.random.default_rng(1)
    q, k, v, do = (rng.standard_normal((3, 700, 8)) for _ in range(4))
    o, lse = cpu.attention_forward(q, k, v, None, {causal}, 0.3)
    grads = cpu.attention_backward(q, k, v, o, lse, do, None, {causal}, 0.3)
    np.matmul = real_matmul
    want_o, want_lse = reference.attention_forward(q, k, v, None, {causal}, 0.3)
    want = reference.attention_backward(q, k, v, want_o, want_lse, do, None, {causal}, 0.3)
    err = max(float(np.abs(a - b).max()) for a, b in zip((o, lse) + tuple(grads), (want_o, want_lse) + tuple(want)))
    print(json.dumps(dict(err=err, names=sorted(names), seen=sorted(seen, key=str))))
    """, {"NUMBA_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"})
    assert r["err"] < 1e-10
    if r["seen"] != [None]:                     # OpenBLAS reachable: it stayed on one thread throughout
        assert r["seen"] == [1]
        assert "minitrans-worker" in r["names"]
