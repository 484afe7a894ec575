"""A decoder-only (causal) transformer language model, nanoGPT style."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import autograd
from ..tensor import Tensor
from .. import nn


@dataclass
class GPTConfig:
    vocab_size: int = 64          # tokens the model reads and predicts
    block_size: int = 64          # longest context (sinusoidal positions are tabulated up to here)
    n_layer: int = 2              # transformer blocks
    n_head: int = 4               # attention heads (head dim = n_embd / n_head)
    n_embd: int = 128             # embedding width
    dropout: float = 0.0          # dropout inside the blocks
    n_ff: int | None = None       # feed-forward width; None = 4 * n_embd
    norm_first: bool = True       # pre-LayerNorm blocks (train stably without a careful warm-up)


class GPT(nn.Module):
    """Token embedding · √d + sinusoidal positions → n_layer causal blocks → LayerNorm → logits."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.n_embd)
        # N(0, 1/d): after ·√d the embeddings have unit scale, like the positional encoding added to them
        nn.init.normal_(self.embed.weight, 0.0, c.n_embd ** -0.5)
        self.pos = nn.PositionalEncoding(c.n_embd, max_len=c.block_size)
        layer = nn.TransformerEncoderLayer(c.n_embd, c.n_head, c.n_ff or 4 * c.n_embd, c.dropout,
                                           batch_first=True, norm_first=c.norm_first)
        self.blocks = nn.TransformerEncoder(layer, c.n_layer, nn.LayerNorm(c.n_embd))
        self.head = nn.Linear(c.n_embd, c.vocab_size)
        for p in self.blocks.parameters():
            if p.ndim > 1:
                nn.init.xavier_uniform_(p)

    def _check(self, idx: Tensor) -> None:
        if idx.ndim != 2 or idx.dtype.is_floating_point:
            raise ValueError(f"GPT expects token ids of shape (batch, time) and an integer dtype, "
                             f"got shape {tuple(idx.shape)} and {idx.dtype}")
        if idx.shape[1] > self.config.block_size:
            raise ValueError(f"GPT: context of {idx.shape[1]} tokens exceeds block_size={self.config.block_size}")

    def forward(self, idx: Tensor) -> Tensor:
        self._check(idx)
        h = self.pos(self.embed(idx) * math.sqrt(self.config.n_embd))   # (B, T, C)
        h = self.blocks(h, is_causal=True)                               # causal self-attention
        return self.head(h)                                              # (B, T, vocab)

    @autograd.no_grad()
    def self_attention_map(self, idx: Tensor) -> np.ndarray:
        """Head-averaged causal self-attention weights of the last block: (B, T, T)."""
        h = self.pos(self.embed(idx) * math.sqrt(self.config.n_embd))
        for layer in self.blocks.layers[:-1]:
            h = layer(h, is_causal=True)
        last = self.blocks.layers[-1]
        x = last.norm1(h) if last.norm_first else h
        _, w = last.self_attn(x, x, x, need_weights=True, is_causal=True)
        return w.numpy()

    @autograd.no_grad()
    def greedy(self, prompt: np.ndarray, steps: int, device="cpu") -> np.ndarray:
        """Greedy continuation of ``prompt`` (B, T0) for ``steps`` tokens: returns (B, steps) int64."""
        from ..tensor import tensor

        out = prompt
        for _ in range(steps):
            nxt = self(tensor(out, device=device))[:, -1].argmax(-1).numpy()
            out = np.concatenate([out, nxt[:, None]], axis=1)
        return out[:, prompt.shape[1]:]
