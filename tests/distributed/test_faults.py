import pytest

from mpi_helpers import run_mpi


def _failed(p, secs, limit=30):
    out = p.stdout + p.stderr
    assert p.returncode not in (0, 124, 137), f"exit status {p.returncode} (124/137 = the timeout hit)\n{out}"
    assert secs < limit, f"the job took {secs:.1f} s to end"
    return out


def test_a_rank_that_raises_ends_the_job_within_seconds_with_its_error():
    p, secs = run_mpi(2, "faults.py", "raise", timeout=60)
    out = _failed(p, secs)
    assert "RuntimeError: rank 1 failed on purpose" in out
    assert "rank 0 finished" not in out


@pytest.mark.parametrize("mode, message", [
    ("model", "the model differs between ranks: parameter 'embed.weight' has shape (11, 8), dtype float32, "
              "device cpu on rank 0 but parameter 'embed.weight' has shape (11, 12), dtype float32, device cpu "
              "on rank 1"),
    ("batch", "the batch differs between ranks: input 0 has shape (2, 6) (int64) on rank 0 but (3, 6) (int64) "
              "on rank 1"),
])
def test_mismatched_model_or_batch_is_a_clear_error_on_every_rank(mode, message):
    p, secs = run_mpi(2, "faults.py", mode, timeout=60)
    out = _failed(p, secs)
    assert "ValueError: DistributedDataParallel: " + message in out, out
    assert "finished" not in out
