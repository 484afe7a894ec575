"""Devices: ``cpu`` (NumPy arrays) and ``cuda`` (numba-cuda device arrays)."""
from __future__ import annotations

from .backends import get_backend


class device:
    """Where a tensor's array lives, e.g. ``mt.device("cpu")`` or ``mt.device("cuda:0")``."""

    __slots__ = ("type", "index", "_backend")

    def __init__(self, spec: "str | device", index: int | None = None) -> None:
        if isinstance(spec, device):
            self.type, self.index, self._backend = spec.type, spec.index, None
            return
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {type(spec).__name__}")
        kind, _, idx = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"unknown device {spec!r}: expected 'cpu' or 'cuda[:N]'")
        if idx:
            if not idx.isdigit():
                raise RuntimeError(f"invalid device index in {spec!r}")
            index = int(idx)
        if kind == "cuda" and index is None:
            index = 0
        self.type, self.index, self._backend = kind, index, None

    @property
    def backend(self):
        b = self._backend
        if b is None:
            b = self._backend = get_backend(self.type)
        return b

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"device(type='{self.type}'" + ("" if self.index is None else f", index={self.index}") + ")"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = device("cpu")


def as_device(d) -> device:
    if d is None:
        return CPU
    if isinstance(d, device):
        return d
    return CPU if d == "cpu" else device(d)


def unusable_reason(spec) -> str | None:
    """None when tensors can be made on device ``spec`` in this process, else a one-line reason
    (an unknown device name, numba-cuda missing, no GPU visible)."""
    try:
        as_device(spec).backend
    except (RuntimeError, TypeError) as e:
        return str(e)
    return None
