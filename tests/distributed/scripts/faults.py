"""What goes wrong on one rank must end the whole job with that rank's message. Modes:
raise (rank 1 raises while rank 0 waits in a collective), model (rank 1 builds another
architecture), batch (rank 1 gets a batch of another shape)."""
import sys

import numpy as np

import minitrans as mt
import minitrans.distributed as dist
from minitrans.models import GPT, GPTConfig

dist.init_process_group(backend="mpi")
rank = dist.get_rank()
mode = sys.argv[1]
if mode == "raise":
    if rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    dist.all_reduce(mt.ones(3))                 # would wait forever for rank 1 without the abort
elif mode in ("model", "batch"):
    width = 12 if mode == "model" and rank == 1 else 8
    model = dist.DistributedDataParallel(GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2,
                                                       n_embd=width, n_ff=16)))
    rows = 3 if rank == 1 else 2
    model(mt.tensor(np.zeros((rows, 6), np.int64)))
print(f"rank {rank} finished", flush=True)
