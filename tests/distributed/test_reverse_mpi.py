"""experiments/reverse.py under mpiexec: only rank 0 writes, and the run resumes on one process.

Each rank runs in its own working directory (mpiexec's MPMD form, ``-wdir``) and the run
directory is relative, so a file written by rank 1 would appear under its directory."""
import csv
import json
import subprocess
import sys
from pathlib import Path

from mpi_helpers import ok, run_mpi

REVERSE = Path(__file__).resolve().parents[2] / "experiments" / "reverse.py"
TINY = ["--batch-size", "8", "--eval-every", "4", "--log-every", "2", "--eval-size", "8", "--d-model", "16",
        "--heads", "2", "--layers", "1", "--ff", "16", "--max-len", "6", "--out-dir", "run"]


def test_reverse_on_two_ranks_then_resume_on_one(tmp_path):
    a, b = tmp_path / "rank0", tmp_path / "rank1"
    a.mkdir(), b.mkdir()
    argv = ["--steps", "4", *TINY]
    rank = lambda d: ["-n", "1", "-wdir", str(d), sys.executable, "-m", "mpi4py", str(REVERSE), *argv]  # noqa: E731
    p, _ = run_mpi(2, None, ranks=[*rank(a), ":", *rank(b)], timeout=120)
    out = ok(p)
    assert out.count("reverse: ") == 1 and "2 ranks of 4 examples" in out          # one voice
    assert "stopped: step budget used up (4 steps)" in out
    assert {"checkpoint.npz", "metrics.csv", "summary.json"} <= {f.name for f in (a / "run").iterdir()}
    assert not (b / "run").exists(), sorted(b.rglob("*"))                          # rank 1 wrote nothing

    # resume the 2-rank run in one plain process with a larger budget
    r = subprocess.run([sys.executable, str(REVERSE), "--resume", "--steps", "6", *TINY], cwd=a,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming run at step 4" in r.stdout, r.stdout
    summary = json.loads((a / "run" / "summary.json").read_text())
    assert summary["steps"] == 6
    with open(a / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(x["step"]) for x in rows] == [2, 4, 6]                               # nothing lost, nothing doubled
    assert all(float(x["train_loss"]) > 0 for x in rows)
