import pytest

from mpi_helpers import ok, run_mpi


@pytest.mark.parametrize("n", [2, 4])
def test_ring_attention_equals_fused_attention_forward_and_gradients(n):
    p, _ = run_mpi(n, "ring.py", timeout=120, env={"TILED": str(int(n == 2))})
    out = ok(p)
    assert all(f"OK rank {r}" in out for r in range(n)), out
