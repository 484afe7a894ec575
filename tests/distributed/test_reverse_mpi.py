"""experiments/reverse.py under mpiexec: only rank 0 writes, SIGTERM stops every rank at the same
step with a checkpoint, and the run resumes in one process with nothing lost.

Each rank runs in its own working directory (mpiexec's MPMD form, ``-wdir``) and the run
directory is relative, so a file written by rank 1 would appear under its directory."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import minitrans as mt
from mpi_helpers import MPIEXEC, need_mpi

REVERSE = Path(__file__).resolve().parents[2] / "experiments" / "reverse.py"
TINY = ["--batch-size", "8", "--eval-every", "4", "--log-every", "2", "--eval-size", "8", "--d-model", "16",
        "--heads", "2", "--layers", "1", "--ff", "16", "--max-len", "6", "--out-dir", "run", "--quiet"]
ENV = {"OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_reverse_on_two_ranks_interrupted_then_resumed_on_one(tmp_path):
    need_mpi()
    a, b = tmp_path / "rank0", tmp_path / "rank1"
    a.mkdir(), b.mkdir()
    rank = lambda d: ["-n", "1", "-wdir", str(d), sys.executable, "-m", "mpi4py", str(REVERSE),  # noqa: E731
                      "--steps", "1000", *TINY]
    # GNU timeout passes the SIGTERM we send it on to mpiexec, which passes it to every rank
    job = subprocess.Popen(["timeout", "-k", "5", "120", str(MPIEXEC), *rank(a), ":", *rank(b)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, **ENV))
    try:
        deadline = time.time() + 90
        while not (a / "run" / "checkpoint.npz").exists() and job.poll() is None and time.time() < deadline:
            time.sleep(0.2)                       # the first evaluation (step 4) writes a checkpoint
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=60)
    finally:
        job.kill()
    text = out + err
    assert job.returncode == 128 + signal.SIGTERM, text
    assert out.count("reverse: ") == 1 and "2 ranks of 4 examples" in out             # one voice
    assert "interrupted by SIGTERM at step" in out, text
    assert "resume with: mpiexec -n 2 python -m mpi4py experiments/reverse.py --resume" in out
    assert not (b / "run").exists(), sorted(b.rglob("*"))                             # rank 1 wrote nothing
    k = int(mt.load(str(a / "run" / "checkpoint.npz"))["step"])
    assert f"at step {k} of 1000" in out and k >= 4

    # resume the 2-rank run in one plain process, three more steps
    r = subprocess.run([sys.executable, str(REVERSE), "--resume", "--steps", str(k + 3), *TINY], cwd=a,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, **ENV))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming run at step {k}" in r.stdout, r.stdout
    assert json.loads((a / "run" / "summary.json").read_text())["steps"] == k + 3
    with open(a / "run" / "metrics.csv") as f:
        steps = [int(x["step"]) for x in csv.DictReader(f)]
    # a row every 2 steps, before and after the interruption, then the final evaluation: none lost or doubled
    assert steps == list(range(2, k + 4, 2)) + ([k + 3] if (k + 3) % 2 else []), steps
