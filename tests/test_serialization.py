"""``mt.save``/``mt.load``: round trips of nested state, corrupted files, crash-safe writes."""
import io
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
from minitrans.serialization import CheckpointError


def _model(seed=0, layers=1, d=8):
    mt.manual_seed(seed)
    return nn.Transformer(d_model=d, nhead=2, num_encoder_layers=layers, num_decoder_layers=1,
                          dim_feedforward=16, dropout=0.0, batch_first=True)


def _checkpoint():
    model = _model()
    opt = mt.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = mt.ones(*p.shape)
    opt.step()
    return model, opt, {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "step": 17, "lr": 1.5e-4,
        "name": "reverse — ünïcode", "done": False, "nothing": None,
        "nested": {"list": [1, 2.5, "x", [np.arange(3)]], "tuple": (3, "y"), 5: "int key"},
        "arrays": {"i64": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.array([True, False]),
                   "f32": np.linspace(0, 1, 4, dtype=np.float32), "scalar": np.array(2.0)},
        "leaf": mt.tensor(np.ones(2), requires_grad=True),
    }


def _assert_same(a, b, where="obj"):
    same = (type(a) is type(b) or (isinstance(a, mt.Tensor) and isinstance(b, mt.Tensor))
            or (isinstance(a, dict) and type(b) is dict))              # an OrderedDict comes back a dict
    assert same, f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (mt.Tensor, np.ndarray)):
        x, y = (a.numpy() if isinstance(a, mt.Tensor) else a), (b.numpy() if isinstance(b, mt.Tensor) else b)
        assert x.dtype == y.dtype and x.shape == y.shape, where
        np.testing.assert_array_equal(x, y, err_msg=where)
        assert getattr(a, "requires_grad", False) == getattr(b, "requires_grad", False), where
    else:
        assert a == b, where


def test_roundtrip_nested(tmp_path):
    model, opt, ck = _checkpoint()
    path = tmp_path / "ck.npz"
    mt.save(ck, path)
    back = mt.load(path)
    _assert_same(ck, back)
    assert isinstance(back["optimizer"]["state"], dict) and 0 in back["optimizer"]["state"]
    # restore into fresh objects
    model2 = _model(seed=1)
    opt2 = mt.optim.Adam(model2.parameters(), lr=1e-3)
    model2.load_state_dict(back["model"])
    opt2.load_state_dict(back["optimizer"])
    for (n, p), q in zip(model.named_parameters(), model2.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    assert os.listdir(tmp_path) == ["ck.npz"]                                  # no temp file left behind


def test_save_overwrites_and_rejects_unknown_types(tmp_path):
    path = tmp_path / "ck.npz"
    mt.save({"v": 1}, path)
    mt.save({"v": 2}, str(path))
    assert mt.load(str(path)) == {"v": 2}
    with pytest.raises(TypeError, match=r"object.*obj\['bad'\]"):
        mt.save({"bad": object()}, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(FileNotFoundError):
        mt.load(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- damaged files
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ck.npz"
    mt.save({"w": np.arange(4096, dtype=np.float64), "step": 3, "name": "run"}, path)
    return path, path.read_bytes()


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1, -30])
def test_truncated_file(saved, keep):
    path, raw = saved
    n = int(len(raw) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(raw) + keep)
    path.write_bytes(raw[:n])
    with pytest.raises(CheckpointError, match=str(path.name)) as e:
        mt.load(path)
    assert isinstance(e.value, RuntimeError)
    assert "truncated" in str(e.value) or "corrupted" in str(e.value)


def test_flipped_byte_in_array(saved):
    path, raw = saved
    payload = np.arange(4096, dtype=np.float64).tobytes()
    at = raw.index(payload) + len(payload) // 2
    bad = bytearray(raw)
    bad[at] ^= 0x40
    path.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="corrupted|unreadable|checksum"):
        mt.load(path)


def test_array_changed_behind_a_valid_zip(saved):
    """A member rewritten with a correct zip CRC but other values: only the manifest's SHA-256 can tell."""
    path, raw = saved
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in members if n != "__manifest__.npy")
    arr = np.load(io.BytesIO(members[name]))
    arr[100] += 1.0
    buf = io.BytesIO()
    np.save(buf, arr)
    members[name] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(CheckpointError, match=r"checksum mismatch for obj\['w'\]"):
        mt.load(path)


def test_flipped_byte_in_manifest(saved):
    path, raw = saved
    at = raw.index(b'"step"') + 2
    bad = bytearray(raw)
    bad[at] ^= 0x01
    path.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError):
        mt.load(path)


def test_not_a_checkpoint(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("just some text\n" * 10)
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(3))
    npz = tmp_path / "plain.npz"
    np.savez(npz, a=np.arange(3))
    fake = tmp_path / "fake.npz"
    np.savez(fake, __manifest__=np.frombuffer(b'{"format": "other", "version": 1}', dtype=np.uint8))
    for p in (txt, npy, npz, fake):
        with pytest.raises(CheckpointError, match=p.name):
            mt.load(p)


# ----------------------------------------------------------------------------- crash mid-save
CRASHING_SAVE = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import minitrans as mt

    real_fdopen = os.fdopen

    class Stalling:
        # a file whose writes stop (forever) once part of the checkpoint is on disk
        def __init__(self, f):
            self.f, self.n = f, 0
        def write(self, b):
            r = self.f.write(b)
            self.n += len(b)
            if self.n > 1_000_000:
                self.f.flush()
                os.fsync(self.f.fileno())
                print("PARTIAL", flush=True)
                time.sleep(120)
            return r
        def __getattr__(self, k):
            return getattr(self.f, k)
        def __enter__(self):
            return self
        def __exit__(self, *a):
            return self.f.__exit__(*a)

    os.fdopen = lambda *a, **k: Stalling(real_fdopen(*a, **k))
    mt.save({"big": np.ones(2_000_000), "step": 2}, sys.argv[1])
    print("FINISHED", flush=True)
""")


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    mt.save({"big": np.zeros(10), "step": 1}, path)
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_SAVE, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == "PARTIAL", f"the subprocess did not stall mid-write: {line!r}"
        temps = [f for f in os.listdir(tmp_path) if f != "ck.npz"]
        assert temps and os.path.getsize(tmp_path / temps[0]) > 1_000_000   # a partial temp file exists
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before, "the target was touched by the interrupted save"
    ck = mt.load(path)
    assert ck["step"] == 1 and ck["big"].shape == (10,)
    # the next save succeeds and replaces it
    mt.save({"step": 3}, path)
    assert mt.load(path) == {"step": 3}


# ----------------------------------------------------------------------------- another architecture
def test_loading_other_architecture_names_the_key(tmp_path):
    path = tmp_path / "ck.npz"
    mt.save({"model": _model(layers=2).state_dict()}, path)
    sd = mt.load(path)["model"]
    small = _model(layers=1)
    before = {k: v.numpy().copy() for k, v in small.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"Unexpected.*'encoder\.layers\.1\.self_attn\.in_proj_weight'"):
        small.load_state_dict(sd)
    for k, v in small.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
    mt.save({"model": _model(d=4).state_dict()}, path)
    with pytest.raises(RuntimeError, match=r"size mismatch for 'encoder\.layers\.0\.self_attn\.in_proj_weight'"):
        small.load_state_dict(mt.load(path)["model"])
