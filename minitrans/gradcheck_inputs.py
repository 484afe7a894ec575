"""Inputs of the gradient-check catalogue: how each input of a case is drawn and laid out.

``In`` names one input (shape, value kind, contiguous or not); ``layout`` groups the inputs
of one call; ``leaf`` builds the float64 tensor gradcheck perturbs and ``view`` the
(possibly non-contiguous) view of it that reaches the op.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import minitrans as mt
from minitrans.tensor import Tensor


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class In:
    """One input: its shape, how its values are drawn, and whether it reaches the op as a non-contiguous view.

    kinds: "n" uniform in ±1.5; "pos" in [0.5, 2]; "unit" in [0.1, 0.9]; "grid"/"grid2" on k·0.1 + 0.03 / + 0.07 (away
    from 0 and from each other: no kinks for relu/abs/clamp/max); "distinct" pairwise distinct
    (no ties for amax); "mask" random bool; "keep" bool with the first column True; "idx:N"
    int64 in [0, N). Only float kinds get a gradient.
    """

    shape: tuple
    kind: str = "n"
    nc: bool = False

    @property
    def is_float(self) -> bool:
        return self.kind in ("n", "pos", "unit", "grid", "grid2", "distinct")

    def describe(self) -> str:
        s = "x".join(str(d) for d in self.shape) or "scalar"
        s += " bool" if self.kind in ("mask", "keep") else " int" if self.kind.startswith("idx") else ""
        return s + (" (nc)" if self.nc else "")


_UNIFORM = {"n": (-1.5, 1.5), "unit": (0.1, 0.9), "pos": (0.5, 2.0)}    # kind -> (low, high)


def _values(rng: np.random.Generator, spec: In) -> np.ndarray:
    shape, k = spec.shape, spec.kind
    n = int(np.prod(shape, dtype=np.int64))
    if k in _UNIFORM:
        return rng.uniform(*_UNIFORM[k], shape)
    if k in ("grid", "grid2"):
        return rng.integers(-20, 20, shape) * 0.1 + (0.03 if k == "grid" else 0.07)
    if k == "distinct":
        return rng.permutation((np.arange(n) - n // 2 + 0.5) * 0.07).reshape(shape)
    if k == "mask":
        return rng.random(shape) < 0.5
    if k == "keep":
        m = rng.random(shape) < 0.6
        m[..., 0] = True
        return m
    if k.startswith("idx:"):
        return rng.integers(0, int(k[4:]), shape).astype(np.int64)
    raise ValueError(f"unknown input kind {k!r}")


def leaf(rng, spec: In, dev) -> Tensor:
    """The tensor gradcheck perturbs: for a non-contiguous input, stored so that ``_view`` gives ``spec.shape``."""
    x = _values(rng, spec)
    grad = spec.is_float
    if spec.nc and x.ndim >= 2:
        x = np.ascontiguousarray(x.transpose(tuple(range(x.ndim - 1, -1, -1))))
    elif spec.nc and x.ndim == 1:
        wide = np.zeros((2 * x.shape[0],), x.dtype)
        wide[::2] = x
        x = wide
    return mt.tensor(x, dtype=mt.float64 if grad else None, device=dev, requires_grad=grad)


def view_element(spec: In, element: tuple | None):
    """The index in the op's input (the view) of an element of the stored leaf."""
    if element is None or not spec.nc or len(element) == 0:
        return element
    return tuple(reversed(element)) if len(element) >= 2 else (element[0] // 2,)


def view(t: Tensor, spec: In) -> Tensor:
    if not spec.nc or t.ndim == 0:
        return t
    return t.permute(*range(t.ndim - 1, -1, -1)) if t.ndim >= 2 else t[::2]


def layout(*specs: In, **config) -> tuple:
    """One layout of a case: its inputs and keyword configuration for the layer's constructor."""
    return specs, config
