"""Running a training script under ``mpiexec`` with the shared training loop.

``launched_by_mpiexec()`` tells a script it was started as one of several ranks;
``trainer_seams()`` gives ``minitrans.train.Trainer`` what it needs to run data-parallel:
only rank 0 writes and prints, every rank keeps its share of the global batch, the logged
loss is the mean over ranks and every rank stops at the same step.
"""
from __future__ import annotations

import os

from ._mpi import mpi
from .process_group import _comm, get_rank, is_initialized
from .sampler import shard_batch

# set by MPICH/Hydra, Open MPI, MVAPICH and PMIx launchers in every rank's environment
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def launched_by_mpiexec() -> bool:
    """True when an MPI launcher started this process as one of two or more ranks."""
    for v in _SIZE_VARS:
        try:
            if int(os.environ.get(v, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def reduce_mean(x: float) -> float:
    """The mean of a Python float over every rank."""
    c = _comm()
    return c.allreduce(float(x)) / c.Get_size()


def reduce_max(code: int) -> int:
    """The largest of an int over every rank (the Trainer's stop reason: any rank may ask to stop)."""
    return _comm().allreduce(int(code), op=mpi().MAX)


def trainer_seams() -> dict:
    """Keyword arguments for ``Trainer`` under an initialised process group ({} without one)."""
    if not is_initialized():
        return {}
    return {"is_main": get_rank() == 0, "shard_batch": shard_batch, "reduce_loss": reduce_mean,
            "sync_stop": reduce_max}
