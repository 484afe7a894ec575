"""Checkpoints: training N steps straight equals k steps + save + load + N − k steps, bit for
bit on CPU (parameters, optimizer state, LR schedule and RNG), and a checkpoint whose dtypes
do not fit the model is refused with an error naming the key. The load checks run on every
device of the ``device`` fixture; the training runs stay on the CPU (a step of the tiny model
takes about 20 s in Numba's CUDA simulator)."""
from __future__ import annotations

import numpy as np
import pytest

import minitrans as mt
from tiny_training import make, train_step

N = 8


def _checkpoint(model, opt, sched, step):
    return {"model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
            "rng": mt.get_rng_state(), "step": step}


def _restore(ckpt, model, opt, sched):
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optim"])
    sched.load_state_dict(ckpt["sched"])
    mt.set_rng_state(ckpt["rng"])
    return ckpt["step"]


def _params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _opt_state(opt):
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[(i, k)] = v.numpy().copy() if isinstance(v, mt.Tensor) else v
    return out


def _assert_bitwise_equal(a: dict, b: dict, what: str):
    assert a.keys() == b.keys(), what
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what} {k}"
        assert x.tobytes() == y.tobytes(), f"{what} {k} differs"


@pytest.mark.parametrize("k", [1, 3, 5])
def test_resume_is_bit_exact(tmp_path, k):
    model, opt, sched = make(seed=0)
    straight = [train_step(model, opt, sched) for _ in range(N)]

    model2, opt2, sched2 = make(seed=0)
    first = [train_step(model2, opt2, sched2) for _ in range(k)]
    path = tmp_path / "ckpt.npz"
    mt.save(_checkpoint(model2, opt2, sched2, k), path)
    # throw away the run and its RNG stream, then resume into fresh objects with other weights
    for _ in range(3):
        train_step(model2, opt2, sched2)
    model3, opt3, sched3 = make(seed=123)
    start = _restore(mt.load(path), model3, opt3, sched3)
    rest = [train_step(model3, opt3, sched3) for _ in range(N - start)]

    assert [float.hex(x) for x in first + rest] == [float.hex(x) for x in straight]
    _assert_bitwise_equal(_params(model3), _params(model), "parameter")
    _assert_bitwise_equal(_opt_state(opt3), _opt_state(opt), "optimizer state")
    assert sched3.last_epoch == sched.last_epoch
    assert [g["lr"] for g in opt3.param_groups] == [g["lr"] for g in opt.param_groups]


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    mt.manual_seed(7)
    mt.randn(3)
    mt.save({"rng": mt.get_rng_state()}, tmp_path / "rng.npz")
    expect = mt.randn(5).numpy()
    mt.manual_seed(99)
    mt.set_rng_state(mt.load(tmp_path / "rng.npz")["rng"])
    np.testing.assert_array_equal(mt.randn(5).numpy(), expect)


def test_without_the_rng_state_the_resume_differs(tmp_path):
    """The control: dropout and batches depend on the RNG, so skipping it must change the run."""
    model, opt, sched = make(seed=0)
    straight = [train_step(model, opt, sched) for _ in range(4)]
    model2, opt2, sched2 = make(seed=0)
    train_step(model2, opt2, sched2)
    ckpt = _checkpoint(model2, opt2, sched2, 1)
    mt.manual_seed(5)                                   # a different stream
    model3, opt3, sched3 = make(seed=1)
    model3.load_state_dict(ckpt["model"])
    opt3.load_state_dict(ckpt["optim"])
    sched3.load_state_dict(ckpt["sched"])
    rest = [train_step(model3, opt3, sched3) for _ in range(3)]
    assert rest != straight[1:]


@pytest.mark.parametrize("bad_dtype", [mt.int64, mt.bool, mt.float64])
def test_dtype_mismatch_on_load_names_the_key_and_changes_nothing(tmp_path, device, bad_dtype):
    model, _, _ = make(seed=0, device=device)
    sd = model.state_dict()
    sd["head.weight"] = mt.zeros(*sd["head.weight"].shape, dtype=bad_dtype)
    mt.save(sd, tmp_path / "bad.npz")
    before = _params(model)
    with pytest.raises(RuntimeError, match=r"dtype mismatch for 'head\.weight'.*" + bad_dtype.name):
        model.load_state_dict(mt.load(tmp_path / "bad.npz"))
    _assert_bitwise_equal(_params(model), before, "parameter")


def test_shape_mismatch_on_load_names_the_key(tmp_path, device):
    model, _, _ = make(seed=0, device=device)
    sd = model.state_dict()
    sd["norm.weight"] = mt.zeros(3)
    mt.save(sd, tmp_path / "bad.npz")
    with pytest.raises(RuntimeError, match=r"norm\.weight.*\(3,\)"):
        model.load_state_dict(mt.load(tmp_path / "bad.npz"))


def test_corrupted_checkpoint_is_refused(tmp_path):
    model, opt, sched = make(seed=0)
    path = tmp_path / "ckpt.npz"
    mt.save(_checkpoint(model, opt, sched, 0), path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    from minitrans.serialization import CheckpointError

    with pytest.raises(CheckpointError):
        mt.load(path)
