import sys

import numpy as np

from mpi_helpers import SCRIPTS, ok, run_mpi

sys.path.insert(0, str(SCRIPTS))
import ddp_train  # noqa: E402

# float32 over 5 Adam steps: the two runs differ only in the order gradients are summed (per
# rank, then over ranks), a few ulp; measured max difference 6e-8 on weights of size 0.05-1.
# 1e-6 leaves a margin, while a missing average (2x gradients), a lost bucket or an
# unsynchronised rank moves weights by > 1e-3.
# One exception: the key part of the attention input bias has a mathematically zero gradient
# (adding a constant to every key score of a row leaves the softmax unchanged), so its float
# gradient is rounding noise that Adam's g/sqrt(v) turns into steps of ~lr in a random direction
# in both runs; those entries are only checked to stay within 5 Adam steps of their start.
ATOL, RTOL = 1e-6, 1e-5
LR, STEPS = 1e-2, 5


def _key_bias(k: str, shape) -> slice | None:
    return slice(shape[0] // 3, 2 * shape[0] // 3) if k.endswith("in_proj_bias") else None


def test_two_ranks_half_batch_equal_one_process_full_batch_after_5_adam_steps(tmp_path):
    out = tmp_path / "ddp.npz"
    p, _ = run_mpi(2, "ddp_train.py", "equal", out)
    text = ok(p)
    got = np.load(out)
    want = ddp_train.train_single()
    start = {k: v.numpy() for k, v in ddp_train.build(0).state_dict().items()}
    for k, w in want.items():
        assert not np.allclose(w, start[k], atol=1e-3) or k.startswith("pos"), f"{k} did not train"
        g, w = got[k].copy(), w.copy()
        kb = _key_bias(k, w.shape)
        if kb is not None:
            assert np.all(np.abs(g[kb] - start[k][kb]) <= LR * STEPS * 1.01), k
            g[kb] = w[kb] = 0
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=RTOL, err_msg=k)

    # overlap: the spy saw every bucket's all-reduce start, the first one while gradients of
    # other parameters were still being computed, all before backward finished; waits after
    trace = next(line for line in text.splitlines() if line.startswith("TRACE ")).split(" | ")
    trace[0] = trace[0][len("TRACE "):]
    buckets = int(next(line for line in text.splitlines() if line.startswith("BUCKETS")).split()[1])
    assert buckets >= 3
    starts = [i for i, e in enumerate(trace) if e == "start"]
    grads = [i for i, e in enumerate(trace) if e.startswith("grad ")]
    end = trace.index("backward finished")
    assert len(starts) == buckets, trace
    assert starts[0] < grads[-1] and starts[-1] < end, trace
    assert all(i > end for i, e in enumerate(trace) if e == "wait"), trace


def test_no_sync_accumulates_locally_then_averages():
    p, _ = run_mpi(2, "ddp_train.py", "no_sync")
    assert "OK rank 1" in ok(p)


def test_cuda_gradients_are_staged_through_host_buckets_and_averaged():
    # NUMBA_ENABLE_CUDASIM=1 (tests/conftest.py) reaches the ranks: cuda is Numba's simulator
    p, _ = run_mpi(2, "ddp_train.py", "cuda")
    assert "OK rank 1" in ok(p)
