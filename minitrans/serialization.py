"""``save``/``load`` of nested state (dicts, lists, tensors, arrays, numbers, strings) as one .npz file.

Format (version 1): a zip (``np.savez``) holding one array per tensor/array (``a0``, ``a1``,
...) and ``__manifest__``: JSON with the format version, the nested structure (arrays
referenced by name, with dtype, shape and kind) and the SHA-256 of every array's bytes.
Writes to a path go to a temporary file in the same directory, are fsynced and then renamed
over the target, so a crash mid-save leaves the previous file intact. ``save``/``load`` also
take open binary file objects.

A whole ``nn.Module`` (``save(model, f)``, as PyTorch programs checkpoint) cannot be written
without pickle: such an object goes into the same container as one pickled member
(``__pickle__``, its checksum in the manifest). ``load`` reads it with a restricted unpickler,
as ``torch.load(weights_only=True)`` does: only minitrans's own classes (modules, tensors,
parameters, model configs), ``OrderedDict`` and whatever ``safe_globals``/``add_safe_globals``
allow can be rebuilt; anything else raises ``pickle.UnpicklingError`` unless the caller
trusts the file and passes ``weights_only=False``. State dicts keep the no-pickle format.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import os
import pickle
import tempfile
import zipfile

import numpy as np

from ._dtype import dtype
from .device import CPU, as_device, device
from .nn.module import Module, Parameter
from .tensor import Tensor

FORMAT = "minitrans-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, corrupted, truncated or not a minitrans checkpoint."""


class _NeedsPickle(Exception):
    """Raised while encoding when the object holds a Module: the whole object is pickled instead."""


def _encode(obj, arrays: dict, where: str):
    if isinstance(obj, Tensor) or isinstance(obj, np.ndarray):
        arr = np.asarray(obj.numpy() if isinstance(obj, Tensor) else obj)
        arr = np.ascontiguousarray(arr).reshape(arr.shape)  # ascontiguousarray alone turns 0-d into (1,)
        name = f"a{len(arrays)}"
        arrays[name] = arr
        return {"__array__": name, "kind": "tensor" if isinstance(obj, Tensor) else "ndarray",
                "dtype": str(arr.dtype), "shape": list(arr.shape),
                "requires_grad": bool(getattr(obj, "requires_grad", False)),
                "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"save: dict keys must be str or int, got {type(k).__name__} at {where}")
            items.append([k, _encode(v, arrays, f"{where}[{k!r}]")])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__":
                [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return {"__value__": obj}
    if isinstance(obj, np.generic):
        return {"__value__": obj.item()}
    if isinstance(obj, Module):
        raise _NeedsPickle
    raise TypeError(f"save: cannot serialise an object of type {type(obj).__name__} at {where}")


def save(obj, f, pickle_protocol: int = 4) -> None:
    """Write ``obj`` to ``f``: a path (written atomically: temp file + fsync + rename) or a binary
    file object. An object holding an ``nn.Module`` is pickled (see the module docstring)."""
    arrays: dict = {}
    try:
        manifest = {"format": FORMAT, "version": VERSION, "tree": _encode(obj, arrays, "obj")}
    except _NeedsPickle:
        blob = np.frombuffer(_dumps(obj, pickle_protocol), dtype=np.uint8)
        arrays = {"__pickle__": blob}
        manifest = {"format": FORMAT, "version": VERSION, "pickle": hashlib.sha256(blob.tobytes()).hexdigest()}
    payload = dict(__manifest__=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8), **arrays)
    if hasattr(f, "write"):
        np.savez(f, **payload)
        return
    path = os.fspath(f)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- pickled objects
def _rebuild_tensor(raw: bytes, dtype: str, shape, requires_grad: bool, parameter: bool):
    arr = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
    if parameter:
        return Parameter(Tensor._wrap(arr), requires_grad)
    t = Tensor._wrap(arr)
    t.requires_grad = bool(requires_grad)
    return t


def _rebuild_array(raw: bytes, dtype: str, shape):
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()


def _plain(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"save: cannot serialise {what} of dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


class _Pickler(pickle.Pickler):
    """Tensors and arrays as (bytes, dtype, shape): rebuilt by two small functions, no NumPy globals."""

    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            arr = _plain(obj.numpy(), "a tensor")
            return _rebuild_tensor, (arr.tobytes(), arr.dtype.str, arr.shape, bool(obj.requires_grad),
                                     isinstance(obj, Parameter))
        if isinstance(obj, np.ndarray):
            arr = _plain(obj, "an array")
            return _rebuild_array, (arr.tobytes(), arr.dtype.str, arr.shape)
        return NotImplemented


def _dumps(obj, protocol: int) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


_USER_SAFE: dict = {}            # "module.name" -> object, from add_safe_globals / safe_globals
_ALWAYS_SAFE = {"collections.OrderedDict", "minitrans.serialization._rebuild_tensor",
                "minitrans.serialization._rebuild_array", "minitrans._dtype._by_name"}   # a dtype by its name


def _qualname(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def add_safe_globals(safe_globals) -> None:
    """Allow these classes/functions when loading pickled objects with ``weights_only=True``."""
    for g in safe_globals:
        if isinstance(g, tuple):
            g, name = g
        else:
            name = _qualname(g)
        _USER_SAFE[name] = g


def get_safe_globals() -> list:
    return list(_USER_SAFE.values())


def clear_safe_globals() -> None:
    _USER_SAFE.clear()


@contextlib.contextmanager
def safe_globals(safe_globals):
    """``with safe_globals([MyModel]): model = load(f)`` allows ``MyModel`` inside the block only."""
    before = dict(_USER_SAFE)
    add_safe_globals(safe_globals)
    try:
        yield
    finally:
        _USER_SAFE.clear()
        _USER_SAFE.update(before)


def _minitrans_global(module: str, name: str):
    """The minitrans object ``module.name`` when loading it is safe: a Tensor/Module subclass, a
    model config dataclass, a dtype or device, or a function of ``nn.functional`` (activations
    stored on layers); else None."""
    if not (module == "minitrans" or module.startswith("minitrans.")) or "." in name:
        return None
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    if getattr(obj, "__module__", "") != module:          # only what the module itself defines
        return None
    if isinstance(obj, type):
        if issubclass(obj, (Module, Tensor, dtype, device)) or dataclasses.is_dataclass(obj):
            return obj
        return None
    if callable(obj) and module == "minitrans.nn.functional" and not name.startswith("_"):
        return obj
    return None


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in _ALWAYS_SAFE:
            return super().find_class(module, name)
        if full in _USER_SAFE:
            return _USER_SAFE[full]
        obj = _minitrans_global(module, name)
        if obj is not None:
            return obj
        raise pickle.UnpicklingError(
            f"Weights only load failed: unsupported global: GLOBAL {full} was not an allowed global by default. "
            f"Please use `mt.serialization.add_safe_globals([{name}])` or "
            f"`with mt.serialization.safe_globals([{name}]):` to allow it, or load with weights_only=False "
            "if you trust the source of the file (unpickling can run arbitrary code).")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("Weights only load failed: persistent ids are not supported")


def _loads(blob: bytes, weights_only: bool):
    if weights_only:
        return _SafeUnpickler(io.BytesIO(blob)).load()
    return pickle.loads(blob)


def _decode(node, files, path, where: str):
    if "__array__" in node:
        name = node["__array__"]
        if name not in files:
            raise CheckpointError(f"load: {path}: array for {where} is missing from the file")
        try:
            arr = files[name]
        except Exception as e:  # a damaged zip member
            raise CheckpointError(f"load: {path}: array for {where} is unreadable ({e})") from None
        if str(arr.dtype) != node["dtype"] or list(arr.shape) != node["shape"]:
            raise CheckpointError(f"load: {path}: {where} has dtype {arr.dtype} and shape {arr.shape}, the "
                                  f"manifest says {node['dtype']} {tuple(node['shape'])}")
        if hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() != node["sha256"]:
            raise CheckpointError(f"load: {path}: checksum mismatch for {where}: the file is corrupted")
        if node["kind"] == "tensor":
            t = Tensor._wrap(arr)
            if node.get("requires_grad"):
                t.requires_grad = True
            return t
        return arr
    if "__dict__" in node:
        return {k: _decode(v, files, path, f"{where}[{k!r}]") for k, v in node["__dict__"]}
    if "__list__" in node:
        return [_decode(v, files, path, f"{where}[{i}]") for i, v in enumerate(node["__list__"])]
    if "__tuple__" in node:
        return tuple(_decode(v, files, path, f"{where}[{i}]") for i, v in enumerate(node["__tuple__"]))
    if "__value__" in node:
        return node["__value__"]
    raise CheckpointError(f"load: {path}: unknown entry at {where}")


def load(f, map_location=None, pickle_module=None, *, weights_only: bool | None = None, mmap=None, **kwargs):
    """Read and validate a checkpoint written by ``save`` from a path or a binary file object;
    raise ``CheckpointError`` naming what is wrong. A pickled object (a whole Module) is rebuilt
    by the restricted unpickler unless ``weights_only=False``."""
    if pickle_module is not None:
        raise NotImplementedError("load: pickle_module is not supported")
    if hasattr(f, "read"):
        path = getattr(f, "name", "<file object>")
        raw = f.read()
    else:
        path = os.fspath(f)
        if not os.path.exists(path):
            raise FileNotFoundError(f"load: no such checkpoint: {path}")
        with open(path, "rb") as fh:
            raw = fh.read()
    try:
        files = np.load(io.BytesIO(raw), allow_pickle=False)
        if not hasattr(files, "files"):  # a plain .npy array, not an archive
            raise ValueError("the file holds a single array, not a checkpoint archive")
        manifest_arr = files["__manifest__"]
    except (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError) as e:
        raise CheckpointError(f"load: {path} is not a readable minitrans checkpoint (truncated or corrupted: "
                              f"{type(e).__name__}: {e})") from None
    try:
        manifest = json.loads(manifest_arr.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"load: {path}: the manifest is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"load: {path} is not a minitrans checkpoint")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"load: {path} has format version {manifest.get('version')}, this minitrans reads "
                              f"version {VERSION}")
    if "pickle" in manifest:
        try:
            blob = files["__pickle__"].tobytes()
        except Exception as e:
            raise CheckpointError(f"load: {path}: the pickled object is unreadable ({e})") from None
        if hashlib.sha256(blob).hexdigest() != manifest["pickle"]:
            raise CheckpointError(f"load: {path}: checksum mismatch for the pickled object: the file is corrupted")
        out = _loads(blob, weights_only is not False)
    else:
        out = _decode(manifest["tree"], files, path, "obj")
    if map_location is not None and as_device(map_location) != CPU:
        out = _to_device(out, map_location)
    return out


def _to_device(obj, dev):
    if isinstance(obj, Tensor):
        return obj.to(dev)
    if isinstance(obj, Module):
        return obj.to(dev)
    if isinstance(obj, dict):
        return {k: _to_device(v, dev) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, dev) for v in obj)
    return obj
