"""Rotary position embeddings (RoPE): positions enter attention as rotations of queries and keys.

Each head vector x of size d is split into halves (x₁, x₂); pair i = (x₁[i], x₂[i]) at
position t is rotated by the angle t·θᵢ, θᵢ = base^(−2i/d):

    rope(x, t) = x·cos(tθ) + rotate_half(x)·sin(tθ),   rotate_half(x) = (−x₂, x₁)

so ⟨rope(q, m), rope(k, n)⟩ depends on m − n only: attention sees relative positions and
nothing is tabulated, so there is no longest sequence (unlike a learned or stored table).
This is the "rotate half" layout of GPT-NeoX and LLaMA's Hugging Face port.
"""
from __future__ import annotations

import numpy as np

from .._functions import cat
from ..tensor import Tensor, tensor
from .module import Module


class RotaryEmbedding(Module):
    """Rotate (B, H, T, head_dim) queries or keys by their positions ``offset .. offset+T-1``."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even (pairs of features rotate), got {head_dim}")
        self.head_dim, self.base = head_dim, float(base)
        self.inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)   # (d/2,)
        self._tables: dict = {}

    def tables(self, offset: int, T: int, dtype, device) -> tuple[Tensor, Tensor]:
        """cos and sin, each (T, head_dim), for positions offset .. offset+T-1 (computed in float64)."""
        key = (offset, T, str(dtype), str(device))
        if key not in self._tables:
            if len(self._tables) > 64:          # incremental decoding asks for a new offset every step
                self._tables.clear()
            ang = np.arange(offset, offset + T, dtype=np.float64)[:, None] * self.inv_freq[None, :]
            ang = np.concatenate([ang, ang], axis=1)                                     # (T, d)
            self._tables[key] = tuple(tensor(f(ang), dtype=dtype, device=device) for f in (np.cos, np.sin))
        return self._tables[key]

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        if x.ndim < 2 or x.shape[-1] != self.head_dim:
            raise ValueError(f"RotaryEmbedding(head_dim={self.head_dim}) expects (..., T, {self.head_dim}), "
                             f"got shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"RotaryEmbedding expects a floating-point input, got {x.dtype}")
        if not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"RotaryEmbedding: offset must be a non-negative int, got {offset!r}")
        cos, sin = self.tables(int(offset), x.shape[-2], x.dtype, x.device)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + cat([-x2, x1], dim=-1) * sin                # x·cos + rotate_half(x)·sin

    def rotate_rows(self, x, offset: int, dtype, device):
        """The same rotation on a backend array x (B, T, H, head_dim) (time second, heads third, as
        a projection's output splits), without autograd: the inference path of cached decoding."""
        cos, sin = self.tables(int(offset), x.shape[1], dtype, device)
        half = self.head_dim // 2
        rotated = device.backend.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos._data[:, None, :] + rotated * sin._data[:, None, :]

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}"
