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


@pytest.mark.parametrize("n, N, drop_last", [(10, 3, False), (10, 3, True), (1, 2, False), (8, 4, False), (5, 1, True)])
def test_distributed_sampler_matches_torch_without_shuffle(n, N, drop_last):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler

    from minitrans.distributed import DistributedSampler

    for r in range(N):
        ours = DistributedSampler(range(n), num_replicas=N, rank=r, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(torch.arange(n), num_replicas=N, rank=r, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_distributed_sampler_shuffles_the_same_on_every_rank_and_per_epoch():
    from minitrans.distributed import DistributedSampler

    n, N = 11, 3
    samplers = [DistributedSampler(list(range(n)), num_replicas=N, rank=r, seed=4) for r in range(N)]
    first = [list(s) for s in samplers]
    assert all(len(x) == 4 for x in first)
    flat = sorted(i for x in first for i in x)
    assert set(flat) == set(range(n)) and len(flat) == 12        # every index, one repeated as padding
    for s in samplers:
        s.set_epoch(1)
    second = [list(s) for s in samplers]
    assert second != first                                         # a new order each epoch
    assert sorted(set(i for x in second for i in x)) == list(range(n))
    with pytest.raises(TypeError, match="must have a length"):
        DistributedSampler(iter(range(3)), num_replicas=1, rank=0)
