import subprocess
import sys

import pytest

from mpi_helpers import need_mpi, ok, run_mpi


@pytest.mark.parametrize("n", [2, 3])
def test_collectives_match_numpy(n):
    # at n = 2 also on cuda tensors (Numba's simulator here), staged through host buffers
    p, _ = run_mpi(n, "collectives.py", env={"EXPECT_WORLD": str(n), "WITH_CUDA": str(int(n == 2))})
    out = ok(p)
    assert all(f"OK rank {r}" in out for r in range(n)), out


def _py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_without_mpi4py_everything_else_imports_and_distributed_says_how_to_install():
    p = _py("import sys; sys.modules['mpi4py'] = None\n"
            "import minitrans as mt, minitrans.distributed as dist\n"
            "from minitrans.train import Trainer\n"
            "assert not dist.is_available() and not dist.is_initialized()\n"
            "print(float((mt.ones(2) * 3).sum()))\n"
            "dist.init_process_group(backend='mpi')\n")
    assert p.returncode != 0 and "6.0" in p.stdout
    assert "ImportError" in p.stderr and "pip install 'minitrans[mpi]'" in p.stderr, p.stderr


def test_group_queries_before_init_and_unknown_backend_are_clear_errors():
    import minitrans.distributed as dist

    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="has not been initialized"):
        dist.get_rank()
    with pytest.raises(ValueError, match="has not been initialized"):
        dist.all_reduce(__import__("minitrans").ones(2))
    with pytest.raises(ValueError, match="backend 'nccl' is not available"):
        dist.init_process_group(backend="nccl")
