"""Data-parallel training of a tiny GPT; run on N ranks (``mpiexec``) or imported for the
one-process reference (``train_single``). Modes (argv[1]):

  equal OUT      5 Adam steps on the global batch split over the ranks; rank 0 saves the
                 parameters to OUT; a spy records when reductions start relative to backward
  no_sync        gradients stay local inside no_sync() and are averaged by the next backward
  cuda           a tiny model on cuda (the simulator under the tests): gradients are staged
                 through host buckets and averaged, against a NumPy gradient of the full batch
"""
import sys

import numpy as np

import minitrans as mt
import minitrans.nn.functional as F
from minitrans.models import GPT, GPTConfig

B, T, VOCAB, STEPS = 8, 6, 11, 5


def build(seed: int):
    mt.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=2, n_head=2, n_embd=8, n_ff=16))


def global_batches(steps=STEPS):
    rng = np.random.default_rng(42)
    return [rng.integers(0, VOCAB, size=(B, T + 1)) for _ in range(steps)]


def loss_of(model, batch):
    x, y = mt.tensor(batch[:, :-1]), mt.tensor(batch[:, 1:])
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))


def train_single():
    """The reference: one process, the whole batch, no minitrans.distributed at all."""
    model = build(0)
    opt = mt.optim.Adam(model.parameters(), lr=1e-2)
    for batch in global_batches():
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
    return {k: v.numpy() for k, v in model.state_dict().items()}


def spy(ddp, events):
    """Record each bucket's all-reduce start and wait (wrapping the wrapper's two MPI seams)."""
    launch, wait = ddp._launch, ddp._wait

    def spied_launch(b):
        events.append("start")
        launch(b)

    def spied_wait(b):
        events.append("wait")
        wait(b)

    object.__setattr__(ddp, "_launch", spied_launch)
    object.__setattr__(ddp, "_wait", spied_wait)


def cuda_check(dist, rank, n):
    mt.manual_seed(rank)                     # different on each rank: the wrapper broadcasts rank 0's
    lin = mt.nn.Linear(3, 2).to("cuda")
    ddp = dist.DistributedDataParallel(lin)
    w, b = lin.weight.numpy().astype(np.float64), lin.bias.numpy().astype(np.float64)
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4 * n, 3)), rng.normal(size=(4 * n, 2))       # the global batch
    xs, ys = dist.shard_batch((x, y))
    out = ddp(mt.tensor(xs, dtype=mt.float32, device="cuda"))
    ((out - mt.tensor(ys, dtype=mt.float32, device="cuda")) ** 2).mean().backward()
    err = x @ w.T + b - y                                                   # mean over the global batch
    gw, gb = 2 * err.T @ x / err.size, 2 * err.sum(0) / err.size
    assert lin.weight.grad.device.type == "cuda"
    np.testing.assert_allclose(lin.weight.grad.numpy(), gw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lin.bias.grad.numpy(), gb, rtol=1e-4, atol=1e-5)


def main():
    import minitrans.distributed as dist
    from minitrans.autograd.engine import queue_callback

    dist.init_process_group(backend="mpi")
    rank, n = dist.get_rank(), dist.get_world_size()
    if sys.argv[1] == "cuda":
        cuda_check(dist, rank, n)
        print(f"OK rank {rank}", flush=True)
        return
    model = build(1000 + rank)            # different on every rank: DDP must copy rank 0's weights
    ref0 = build(1000)
    for (k, a), b in zip(model.state_dict().items(), ref0.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k) if rank == 0 else None
    # small buckets: several reductions per backward
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=600 / 2 ** 20)
    for (k, a), b in zip(model.state_dict().items(), ref0.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"rank {rank} {k} not broadcast")
    mode = sys.argv[1]
    if mode == "equal":
        # the reference starts from seed 0's weights: load them on rank 0, broadcast again
        if rank == 0:
            model.load_state_dict(build(0).state_dict())
        ddp._broadcast_state()
        events = []
        spy(ddp, events)
        names = {id(p): k for k, p in model.named_parameters()}
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(lambda t: events.append("grad " + names[id(t)]))
        opt = mt.optim.Adam(ddp.parameters(), lr=1e-2)
        for step, batch in enumerate(global_batches()):
            opt.zero_grad()
            loss = loss_of(ddp, dist.shard_batch(batch))
            if step == 1:                 # after the first backward rebuilt the buckets in arrival order
                events.clear()
                queue_callback(lambda: events.append("backward finished"))
            loss.backward()
            if step == 1:
                trace = list(events)
            opt.step()
        if rank == 0:
            np.savez(sys.argv[2], **{k: v.numpy() for k, v in model.state_dict().items()})
            print("TRACE " + " | ".join(trace))
            print("BUCKETS", len(ddp.bucket_sizes))
    elif mode == "no_sync":
        local = dist.shard_batch(global_batches(1)[0])
        with ddp.no_sync():
            loss_of(ddp, local[:2]).backward()
        g1 = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
        gathered = [mt.zeros(*model.head.weight.shape) for _ in range(n)]
        dist.all_gather(gathered, model.head.weight.grad)
        assert not np.allclose(gathered[0].numpy(), gathered[1].numpy()), "no_sync still reduced"
        loss_of(ddp, local[2:]).backward()           # outside no_sync: averages what accumulated
        # the reference: each rank's local accumulated gradient, averaged with the (separately tested) all_reduce
        model2 = build(0)
        model2.load_state_dict(model.state_dict())
        loss_of(model2, local[:2]).backward()
        loss_of(model2, local[2:]).backward()
        for k, p in model2.named_parameters():
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
            np.testing.assert_allclose(dict(model.named_parameters())[k].grad.numpy(), p.grad.numpy(),
                                       rtol=1e-5, atol=1e-6, err_msg=k)
        assert any(not np.allclose(g1[k], p.grad.numpy()) for k, p in model.named_parameters())
    print(f"OK rank {rank}", flush=True)


if __name__ == "__main__":
    main()
