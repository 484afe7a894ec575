"""shard_batch without MPI (rank and world size given): equal blocks that together are the batch."""
import numpy as np
import pytest

import minitrans as mt
from minitrans.distributed import DistributedDataParallel, shard_batch


def test_shards_are_disjoint_equal_blocks_covering_the_batch():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(0, 9, (12, 5)), rng.normal(size=(12, 3))
    parts = [shard_batch((src, tgt), rank=r, world_size=3) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), src)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), tgt)
    assert all(p[0].shape == (4, 5) for p in parts) and isinstance(parts[0], tuple)
    d = shard_batch({"x": mt.tensor(tgt)}, rank=1, world_size=2)
    np.testing.assert_array_equal(d["x"].numpy(), tgt[6:])
    np.testing.assert_array_equal(shard_batch(src, rank=0, world_size=1), src)


@pytest.mark.parametrize("batch, kw, err, msg", [
    (np.zeros((7, 2)), dict(rank=0, world_size=2), ValueError, "a global batch of 7 cannot be split evenly over 2"),
    ((np.zeros((4, 2)), np.zeros((6, 2))), dict(rank=0, world_size=2), ValueError, r"first \(batch\) dimension"),
    ((np.zeros((4, 2)), 3), dict(rank=0, world_size=2), TypeError, "element 1 of the batch is a int"),
    (np.zeros(()), dict(rank=0, world_size=1), TypeError, "no batch dimension"),
    (np.zeros((4, 2)), dict(rank=2, world_size=2), ValueError, "rank 2 is not in a world of size 2"),
])
def test_bad_batches_are_clear_errors(batch, kw, err, msg):
    with pytest.raises(err, match=msg):
        shard_batch(batch, **kw)


def test_ddp_before_init_says_what_to_call():
    with pytest.raises(ValueError, match=r"call minitrans.distributed.init_process_group\(backend='mpi'\) first"):
        DistributedDataParallel(mt.nn.Linear(2, 2))
