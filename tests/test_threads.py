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
