"""Every collective against a NumPy reference rebuilt from every rank's (seeded) inputs."""
import os

import numpy as np

import minitrans as mt
import minitrans.distributed as dist

dist.init_process_group(backend="mpi")
r, n = dist.get_rank(), dist.get_world_size()
assert dist.is_initialized() and n == int(os.environ["EXPECT_WORLD"])


def data(rank, shape, dtype):
    x = np.random.default_rng(100 + rank).normal(size=shape) * 10
    return x.astype(dtype)


every = lambda shape, dt: [data(k, shape, dt) for k in range(n)]          # noqa: E731
ref = {"SUM": lambda a: np.sum(a, 0), "AVG": lambda a: np.mean(a, 0), "MAX": lambda a: np.max(a, 0),
       "MIN": lambda a: np.min(a, 0)}
devices = ["cpu"] + (["cuda"] if os.environ.get("WITH_CUDA") == "1" else [])   # the simulator under tests
for device in devices:
    cpu = device == "cpu"          # the simulator is slow: fewer cases on cuda
    for dt, tol in (("float64", 1e-12), ("float32", 1e-5), ("int64", 0))[: 3 if cpu else 2]:
        for shape in ((1,), (3, 5), (2, 3, 4))[: 3 if cpu else 2]:
            for op in ("SUM", "AVG", "MAX", "MIN"):
                if op == "AVG" and dt == "int64":
                    continue
                t = mt.tensor(data(r, shape, dt), device=device)
                dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
                want = ref[op](np.stack(every(shape, dt)).astype(np.float64))
                np.testing.assert_allclose(t.numpy(), want, rtol=tol, atol=tol, err_msg=f"{device} {dt} {op}")
    # a non-contiguous view (a transpose) is reduced in place through a contiguous copy
    base = mt.tensor(data(r, (4, 3), "float64"), device=device)
    view = base.T
    dist.all_reduce(view)
    np.testing.assert_allclose(base.numpy(), np.sum(every((4, 3), "float64"), 0))
    # async: the data changes only once the work is waited for
    t = mt.tensor(data(r, (6,), "float32"), device=device)
    w = dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True)
    assert w.wait() and w.is_completed()
    np.testing.assert_allclose(t.numpy(), np.max(every((6,), "float32"), 0))
    # broadcast from the last rank
    t = mt.tensor(data(r, (2, 3), "float32"), device=device)
    dist.broadcast(t, src=n - 1)
    np.testing.assert_array_equal(t.numpy(), data(n - 1, (2, 3), "float32"))
    # all_gather
    outs = [mt.zeros(3, 2, dtype=mt.float64, device=device) for _ in range(n)]
    dist.all_gather(outs, mt.tensor(data(r, (3, 2), "float64"), device=device))
    for k in range(n):
        np.testing.assert_array_equal(outs[k].numpy(), data(k, (3, 2), "float64"))

# a shape that differs on one rank is an error on every rank, naming both shapes; nothing hangs
try:
    dist.all_reduce(mt.ones(3 if r == 0 else 4))
    raise AssertionError("no error for mismatched shapes")
except ValueError as e:
    assert "rank 0 has shape (3,)" in str(e) and "rank 1 has shape (4,)" in str(e), e
try:
    dist.broadcast(mt.ones(2, dtype=mt.float32 if r == 0 else mt.float64))
    raise AssertionError("no error for mismatched dtypes")
except ValueError as e:
    assert "dtype float32" in str(e) and "dtype float64" in str(e), e
for bad, err in ((lambda: dist.all_reduce(np.ones(3)), TypeError),
                 (lambda: dist.all_reduce(mt.ones(3), op="sum"), ValueError),
                 (lambda: dist.all_reduce(mt.ones(3, dtype=mt.int64), op=dist.ReduceOp.AVG), TypeError),
                 (lambda: dist.broadcast(mt.ones(3), src=n), ValueError),
                 (lambda: dist.all_gather([mt.ones(3)], mt.ones(3)), ValueError),
                 (lambda: dist.init_process_group(backend="mpi"), RuntimeError)):
    try:
        bad()
        raise AssertionError("no error")
    except err:
        pass
dist.barrier()
dist.destroy_process_group()
assert not dist.is_initialized()
print(f"OK rank {r}", flush=True)
