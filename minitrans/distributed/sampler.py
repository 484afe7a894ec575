"""Splitting the global batch between ranks, so the batch the user asked for stays the global one.

Every rank draws the same global batch (same data generator, same seed) and keeps its own
contiguous block of rows: no two ranks train on the same example in a step, and the data
stream (and so a checkpoint) does not depend on the number of ranks.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor
from .process_group import get_rank, get_world_size


def _rank_world(rank, world_size) -> tuple[int, int]:
    if rank is None or world_size is None:
        rank = get_rank() if rank is None else rank
        world_size = get_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return int(rank), int(world_size)


def shard_batch(batch, rank: int | None = None, world_size: int | None = None):
    """Rank ``rank``'s rows ``[rank·B/N, (rank+1)·B/N)`` of every array or Tensor in ``batch``
    (one array, or a tuple/list/dict of them, all with the same first dimension B).

    B must be divisible by the number of ranks N: with unequal shares the average of the
    per-rank mean losses would not be the mean over the global batch.
    """
    rank, n = _rank_world(rank, world_size)
    leaves = list(batch.values()) if isinstance(batch, dict) else \
        list(batch) if isinstance(batch, (tuple, list)) else [batch]
    sizes = set()
    for i, a in enumerate(leaves):
        if not isinstance(a, (np.ndarray, Tensor)) or a.ndim == 0:
            raise TypeError(f"shard_batch: element {i} of the batch is a {type(a).__name__}"
                            f"{'' if not hasattr(a, 'ndim') else ' with no batch dimension'}; "
                            f"expected arrays or Tensors with the batch as their first dimension")
        sizes.add(a.shape[0])
    if len(sizes) != 1:
        raise ValueError(f"shard_batch: the batch's arrays differ in their first (batch) dimension: {sorted(sizes)}")
    B = sizes.pop()
    if B % n:
        raise ValueError(f"shard_batch: a global batch of {B} cannot be split evenly over {n} ranks; "
                         f"use a batch size divisible by {n}")
    lo, hi = rank * (B // n), (rank + 1) * (B // n)
    cut = [a[lo:hi] for a in leaves]
    if isinstance(batch, dict):
        return dict(zip(batch.keys(), cut))
    if isinstance(batch, (tuple, list)):
        return type(batch)(cut)
    return cut[0]


class DistributedSampler:
    """The indices of an indexable dataset that rank ``rank`` of ``num_replicas`` reads this epoch,
    as ``torch.utils.data.DistributedSampler``: every rank shuffles with the same seed
    (``seed + epoch``; call ``set_epoch`` each epoch), then takes every N-th index from its rank
    on. Without ``drop_last`` the list is padded by repeating indices from its start so that
    all ranks get the same count; with it, the tail that does not divide evenly is dropped.
    The shuffled order comes from NumPy's generator, so it differs from PyTorch's.
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        try:
            self.n = len(dataset)
        except TypeError:
            raise TypeError(f"DistributedSampler: the dataset must have a length, got "
                            f"{type(dataset).__name__}") from None
        self.rank, self.num_replicas = _rank_world(rank, num_replicas)
        self.shuffle, self.seed, self.drop_last, self.epoch = bool(shuffle), int(seed), bool(drop_last), 0
        N = self.num_replicas
        self.num_samples = self.n // N if drop_last else -(-self.n // N)
        self.total_size = self.num_samples * N

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        idx = np.random.default_rng(self.seed + self.epoch).permutation(self.n) if self.shuffle else \
            np.arange(self.n)
        if self.total_size > self.n:                     # pad by repeating from the start
            idx = np.resize(idx, self.total_size)
        idx = idx[:self.total_size]
        return iter(idx[self.rank:self.total_size:self.num_replicas].tolist())
