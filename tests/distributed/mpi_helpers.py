"""Start a script on N ranks the way the tests must: the venv's ``mpiexec``, ``python -m mpi4py``
(a rank that raises aborts the job), a hard ``timeout`` and no standard input."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def need_mpi() -> None:
    pytest.importorskip("mpi4py", reason="the mpi extra is not installed: pip install -e '.[mpi]'")
    if not MPIEXEC.exists():
        pytest.fail(f"mpi4py is installed but {MPIEXEC} is missing: install the MPICH wheel (pip install mpich)")


def run_mpi(n: int, script, *args, timeout: float = 60, cwd=None, env=None, ranks=None) -> tuple:
    """Run ``script`` on ``n`` ranks; returns (CompletedProcess, seconds). ``ranks`` replaces the
    whole launch line after ``mpiexec`` (for per-rank working directories)."""
    need_mpi()
    e = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
             PYTHONUNBUFFERED="1", **(env or {}))
    script = str(SCRIPTS / script) if script is not None and not os.path.isabs(str(script)) else str(script)
    launch = ranks or ["-n", str(n), sys.executable, "-m", "mpi4py", script, *map(str, args)]
    cmd = ["timeout", "-k", "5", str(timeout), str(MPIEXEC), *launch]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=cwd, env=e)
    return p, time.perf_counter() - t0


def ok(p) -> str:
    """Assert a clean exit; the failure message carries both streams."""
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"exit status {p.returncode}\n{out[-6000:]}"
    return out
