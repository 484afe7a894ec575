"""``minitrans.distributed``: data-parallel training and sequence-parallel attention over MPI.

Names and semantics follow ``torch.distributed``. Launch one process per rank:

    mpiexec -n 4 python -m mpi4py train.py         # -m mpi4py: a rank that raises ends the job

    import minitrans.distributed as dist
    dist.init_process_group(backend="mpi")
    model = dist.DistributedDataParallel(model)     # same start on every rank, averaged gradients

mpi4py and an MPI library are optional (``pip install 'minitrans[mpi]'``); without them this
package still imports, and calling into it says how to install them. See docs/distributed.md.
"""
from .process_group import (
    ReduceOp, Work, all_gather, all_reduce, barrier, broadcast, broadcast_object, check_same_across_ranks,
    destroy_process_group, get_comm, get_rank, get_world_size, init_process_group, is_available, is_initialized,
    on_main,
)
from ._mpi import cuda_aware
from .ddp import DistributedDataParallel
from .launch import launched_by_mpiexec, trainer_seams
from .ring import ring_attention
from .sampler import shard_batch

__all__ = ["DistributedDataParallel", "launched_by_mpiexec", "ring_attention", "shard_batch", "trainer_seams", "ReduceOp", "Work", "all_gather", "all_reduce", "barrier", "broadcast", "broadcast_object",
           "check_same_across_ranks", "cuda_aware", "destroy_process_group", "get_comm", "get_rank",
           "get_world_size", "init_process_group", "is_available", "is_initialized", "on_main"]
