"""What a warmed-up training step of the tests' encoder-decoder asks of the device, counted in
the simulator: kernel launches (180 now: 599 before flat-buffer Adam, one-launch clipping,
gradients copied into the optimizer's buffer a few launches for all and single-launch in-place
ops, 212 before a basic index's gradient took one launch, one index array was read in place
by gather / add_at, a bool mask entered a float multiply without a cast, a bool sum
accumulated in int64 without one and 24 gradients went per copy launch; 3 of them are the
index range checks of the two embeddings and the loss's targets, which every device makes),
device allocations that miss the caching pool (none), and host waits on the device: none
inside the step (the index range checks leave their [min, max] in device slots, read at the
next host read), and exactly one when the user reads the loss (.item() brings the pending
checks back in the same transfer as the value).

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
    from numba.cuda.simulator import kernel as simulator_kernel
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    from minitrans.kernels.cuda._util import counters, record_launches

    mt.manual_seed(0)
    model = Seq2Seq()
    model.to("cuda")
    opt = mt.optim.Adam(model.parameters(), lr=1e-2)
    batch = tuple(mt.tensor(a, device="cuda") for a in _batch())
    with record_launches() as first_step_keys:  # warm-up: the pool fills, the optimizer packs its buffers
        _step(model, opt, batch)
    spy = {"kernels": 0, "copy_to_host": 0, "synchronize": 0}
    mp = pytest.MonkeyPatch()
    call, to_host, sync = simulator_kernel.FakeCUDAKernel.__call__, FakeCUDAArray.copy_to_host, cuda.synchronize

    def kcall(self, *a, **k):
        if not self._device:  # device functions are FakeCUDAKernels too: count kernel launches only
            spy["kernels"] += 1
        return call(self, *a, **k)

    def host(self, *a, **k):
        spy["copy_to_host"] += 1
        return to_host(self, *a, **k)

    def synchronize(*a, **k):
        spy["synchronize"] += 1
        return sync(*a, **k)

    mp.setattr(simulator_kernel.FakeCUDAKernel, "__call__", kcall)
    mp.setattr(FakeCUDAArray, "copy_to_host", host)
    mp.setattr(cuda, "synchronize", synchronize)
    counters.reset()
    loss = _step(model, opt, batch)
    in_step = (counters.snapshot(), dict(spy), dict(counters.launched))
    value = loss.item()
    after_item = (counters.snapshot(), dict(spy))
    mp.undo()
    return in_step, after_item, value, first_step_keys


def test_step_launches_at_most_180_kernels(measured):
    (c, spy, by_kernel), _, _, _ = measured
    assert c["launches"] == spy["kernels"], (c, spy)  # the backend's counter misses no launch
    assert 0 < c["launches"] <= 180, by_kernel
    assert by_kernel.get("indexed._pad_kernel") == 9, by_kernel  # the 9 basic-index gradients, one launch each
    assert "array._index_linear_kernel" not in by_kernel, by_kernel  # embeddings read their index array in place
    assert by_kernel.get("index_range.extremes_kernel") == 3, by_kernel  # two embeddings, one loss
    assert by_kernel.get("adam.adam_kernel") == 1, by_kernel  # one Adam launch for all parameters
    assert by_kernel.get("clip.clip_kernel") == 1, by_kernel  # one launch for clip_grad_norm_
    assert by_kernel.get("array._copy_many_kernel") == 2, by_kernel  # 38 parameter gradients, 24 per launch


def test_warm_step_allocates_nothing_from_the_driver(measured):
    (c, _, _), _, _, _ = measured
    assert c["driver_allocs"] == 0, c
    assert c["pool_hits"] > 0, c  # the step does allocate: every block comes from the pool


def test_no_host_wait_inside_a_step_and_one_for_item(measured):
    (c, spy, _), (c2, spy2), value, _ = measured
    # the three index range checks launch and queue; nothing waits for the device
    assert c["syncs"] == 0 and spy["copy_to_host"] == 0 and spy["synchronize"] == 0, (c, spy)
    # .item(): the one the user asked for, the checks' slots travelling with the value
    assert c2["syncs"] == 1 and spy2["copy_to_host"] == 1 and spy2["synchronize"] == 0, (c2, spy2)
    assert np.isfinite(value)


def test_guard_lists_every_kernel_a_training_step_launches(measured):
    """Every (kernel, argument types) a float32 encoder-decoder training step launches (forward,
    backward, clip, Adam packing its buffers and stepping, zero_grad), plus some float64 and
    integer work, is a specialisation the compile guard compiles for sm_90."""
    from minitrans.kernels.cuda import guard
    from minitrans.kernels.cuda._util import record_launches

    keys = set(measured[3])
    with record_launches() as more:
        x = mt.tensor(np.arange(6.0).reshape(2, 3), dtype=mt.float64, device="cuda", requires_grad=True)
        (mt.nn.functional.softmax(x, -1) * x).sum().backward()
        i = mt.tensor(np.arange(6).reshape(2, 3), device="cuda")
        ((i * 2 + 1) - i).sum().item()
        (i > 2).any().item()
    keys |= more
    assert len(keys) > 20, keys
    missing = sorted(keys - guard.launch_keys())
    assert not missing, "launched but not in the guard's list:\n" + "\n".join(map(str, missing))

