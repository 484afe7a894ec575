"""``save``/``load`` of nested state (dicts, lists, tensors, arrays, numbers, strings) as one .npz file.

Format (version 1): a zip (``np.savez``) holding one array per tensor/array (``a0``, ``a1``,
...) and ``__manifest__``: JSON with the format version, the nested structure (arrays
referenced by name, with dtype, shape and kind) and the SHA-256 of every array's bytes.
Writes go to a temporary file in the same directory, are fsynced and then renamed over
the target, so a crash mid-save leaves the previous file intact.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from .tensor import Tensor

FORMAT = "minitrans-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, corrupted, truncated or not a minitrans checkpoint."""


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
    raise TypeError(f"save: cannot serialise an object of type {type(obj).__name__} at {where}")


def save(obj, path) -> None:
    """Write ``obj`` to ``path`` atomically (temp file + fsync + rename)."""
    arrays: dict = {}
    tree = _encode(obj, arrays, "obj")
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __manifest__=np.frombuffer(manifest.encode(), dtype=np.uint8), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def load(path, map_location=None):
    """Read and validate a checkpoint written by ``save``; raise ``CheckpointError`` naming what is wrong."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such checkpoint: {path}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
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
    out = _decode(manifest["tree"], files, path, "obj")
    if map_location is not None and str(map_location) != "cpu":
        out = _to_device(out, map_location)
    return out


def _to_device(obj, dev):
    if isinstance(obj, Tensor):
        return obj.to(dev)
    if isinstance(obj, dict):
        return {k: _to_device(v, dev) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, dev) for v in obj)
    return obj
