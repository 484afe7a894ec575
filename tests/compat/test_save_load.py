"""save/load with file objects, whole modules through the restricted unpickler, safe_globals."""
import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import minitrans as mt
from minitrans import nn
from minitrans.serialization import safe_globals


class TinyLM(nn.Module):                 # a user's class: not allowed by default
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.out = nn.Linear(4, 5)
        self.note = {"vocab": 5}

    def forward(self, x):
        return self.out(self.emb(x))


def _roundtrip(obj, **kw):
    buf = io.BytesIO()
    mt.save(obj, buf)
    buf.seek(0)
    return mt.load(buf, **kw), buf.getvalue()


def test_state_dict_through_file_objects_stays_pickle_free(tmp_path):
    mt.manual_seed(0)
    model = nn.Linear(3, 2)
    with open(tmp_path / "sd.pt", "wb") as f:
        mt.save(model.state_dict(), f)
    with open(tmp_path / "sd.pt", "rb") as f:
        sd = mt.load(f)
    np.testing.assert_array_equal(sd["weight"].numpy(), model.weight.numpy())
    with zipfile.ZipFile(tmp_path / "sd.pt") as z:
        assert "__pickle__.npy" not in z.namelist()


def test_whole_module_roundtrip():
    mt.manual_seed(0)
    model = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16,
                           dropout=0.0, batch_first=True)
    back, raw = _roundtrip(model)
    assert type(back) is nn.Transformer and back is not model
    src, tgt = mt.randn(2, 3, 8), mt.randn(2, 4, 8)
    np.testing.assert_array_equal(back(src, tgt).numpy(), model(src, tgt).numpy())
    for (n, p), (n2, q) in zip(model.named_parameters(), back.named_parameters()):
        assert n == n2 and isinstance(q, nn.Parameter) and q.requires_grad
    back(src, tgt).sum().backward()                                  # the loaded model trains
    assert all(p.grad is not None for p in back.parameters())


def test_a_users_class_needs_safe_globals():
    mt.manual_seed(1)
    model = TinyLM()
    buf = io.BytesIO()
    mt.save(model, buf)
    for attempt in range(2):
        buf.seek(0)
        with pytest.raises(pickle.UnpicklingError, match=r"test_save_load\.TinyLM.*safe_globals"):
            mt.load(buf)
        if attempt == 0:
            with safe_globals([TinyLM]):
                buf.seek(0)
                back = mt.load(buf)
            np.testing.assert_array_equal(back(mt.tensor([1, 4])).numpy(), model(mt.tensor([1, 4])).numpy())
            assert back.note == {"vocab": 5}
    buf.seek(0)
    assert isinstance(mt.load(buf, weights_only=False), TinyLM)        # the caller trusts the file


def test_pytorch_raises_the_same_error_type():
    torch = pytest.importorskip("torch")

    class Custom(torch.nn.Module):
        pass

    globals()["Custom"] = Custom                                       # picklable by name
    Custom.__qualname__ = "Custom"
    buf = io.BytesIO()
    torch.save(Custom(), buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buf)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _container(blob: bytes) -> io.BytesIO:
    arr = np.frombuffer(blob, np.uint8)
    manifest = {"format": "minitrans-checkpoint", "version": 1, "pickle": hashlib.sha256(blob).hexdigest()}
    buf = io.BytesIO()
    np.savez(buf, __manifest__=np.frombuffer(json.dumps(manifest).encode(), np.uint8), __pickle__=arr)
    buf.seek(0)
    return buf


def _global(module: str, name: str) -> bytes:
    """A protocol-4 pickle that only looks up ``module.name`` (STACK_GLOBAL)."""
    s = lambda t: b"\x8c" + bytes([len(t)]) + t.encode()  # noqa: E731  (SHORT_BINUNICODE)
    return b"\x80\x04" + s(module) + s(name) + b"\x93."


@pytest.mark.parametrize("payload", [
    pickle.dumps(_Evil()),
    _global("minitrans.serialization", "save"),            # a minitrans function that writes files
    _global("minitrans.nn.functional", "np.load"),          # a dotted name reaching outside minitrans
    _global("minitrans.nn.functional", "np"),               # a module imported by a minitrans module
])
def test_restricted_unpickler_refuses_other_globals(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="not an allowed global"):
        mt.load(_container(payload))
    assert not (tmp_path / "pwned.txt").exists()


def test_corrupted_pickle_member_is_caught():
    buf = _container(pickle.dumps([1, 2]))
    raw = bytearray(buf.getvalue())
    i = raw.index(b"\x80\x04", raw.index(b"__pickle__") + 10)        # inside the pickled bytes
    raw[i + 3] ^= 0xFF
    with pytest.raises(mt.serialization.CheckpointError):
        mt.load(io.BytesIO(bytes(raw)))
