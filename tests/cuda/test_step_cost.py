"""What a warmed-up training step of the tests' encoder-decoder asks of the device, counted in
the simulator: kernel launches (at most 200; it was 599 before flat-buffer Adam, one-launch
clipping, in-place accumulation and in-place ops), device allocations that miss the caching
pool (none), and host waits on the device (none, until the user reads the loss).

The counters are the backend's own (``kernels/cuda/_util.counters``); an independent spy on
numba's simulator (kernel calls, ``copy_to_host``, ``cuda.synchronize``) checks them."""
import numpy as np
import pytest

import minitrans as mt
from seq2seq_step import Seq2Seq, _batch, _forward_backward


def _step(model, opt, batch):
    loss = _forward_backward(model, *batch)
    mt.optim.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    return loss


@pytest.fixture(scope="module")
def measured():
    from numba import cuda
    from numba.cuda.simulator import kernel as SK
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    from minitrans.kernels.cuda._util import counters

    mt.manual_seed(0)
    model = Seq2Seq()
    model.to("cuda")
    opt = mt.optim.Adam(model.parameters(), lr=1e-2)
    batch = tuple(mt.tensor(a, device="cuda") for a in _batch())
    for _ in range(2):  # warm-up: the pool fills, the optimizer packs its buffers
        _step(model, opt, batch)
    spy = {"kernels": 0, "copy_to_host": 0, "synchronize": 0}
    mp = pytest.MonkeyPatch()
    call, to_host, sync = SK.FakeCUDAKernel.__call__, FakeCUDAArray.copy_to_host, cuda.synchronize

    def kcall(self, *a, **k):
        spy["kernels"] += 1
        return call(self, *a, **k)

    def host(self, *a, **k):
        spy["copy_to_host"] += 1
        return to_host(self, *a, **k)

    def synchronize(*a, **k):
        spy["synchronize"] += 1
        return sync(*a, **k)

    mp.setattr(SK.FakeCUDAKernel, "__call__", kcall)
    mp.setattr(FakeCUDAArray, "copy_to_host", host)
    mp.setattr(cuda, "synchronize", synchronize)
    counters.reset()
    loss = _step(model, opt, batch)
    in_step = (counters.snapshot(), dict(spy), dict(counters.launched))
    value = loss.item()
    after_item = (counters.snapshot(), dict(spy))
    mp.undo()
    return in_step, after_item, value


def test_step_launches_at_most_200_kernels(measured):
    (c, spy, by_kernel), _, _ = measured
    assert c["launches"] == spy["kernels"], (c, spy)  # the backend's counter misses no launch
    assert 0 < c["launches"] <= 200, by_kernel
    assert by_kernel.get("adam.adam_kernel") == 1, by_kernel  # one Adam launch for all parameters
    assert by_kernel.get("clip.clip_kernel") == 1, by_kernel  # one launch for clip_grad_norm_


def test_warm_step_allocates_nothing_from_the_driver(measured):
    (c, _, _), _, _ = measured
    assert c["driver_allocs"] == 0, c
    assert c["pool_hits"] > 0, c  # the step does allocate: every block comes from the pool


def test_no_host_wait_inside_a_step_until_the_loss_is_read(measured):
    (c, spy, _), (c2, spy2), value = measured
    assert c["syncs"] == 0 and spy["copy_to_host"] == 0 and spy["synchronize"] == 0, (c, spy)
    assert c2["syncs"] == 1 and spy2["copy_to_host"] == 1, (c2, spy2)  # .item(): the one the user asked for
    assert np.isfinite(value)
