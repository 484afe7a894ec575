"""The decoder-only LM of the addition task and the W1 benchmark (the encoder–decoder of the reversal
task is ``minitrans.models.Seq2Seq``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import minitrans as mt
import minitrans.nn as nn
import minitrans.nn.functional as F
from minitrans.data import PAD


@dataclass
class LMConfig:
    vocab_size: int = 15
    d_model: int = 128
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 512
    dropout: float = 0.0
    max_len: int = 64


class DecoderLM(nn.Module):
    """Decoder-only causal transformer (pre-LN encoder layers with a causal mask), nanoGPT style."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, 0.0, cfg.d_model ** -0.5)   # unit scale after ·√d, as the positions
        self.pos = nn.PositionalEncoding(cfg.d_model, max_len=cfg.max_len)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, nn.LayerNorm(cfg.d_model))
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        for p in self.blocks.parameters():
            if p.ndim > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        h = self.pos(self.embed(x) * math.sqrt(self.cfg.d_model))    # (B, T, C)
        h = self.blocks(h, is_causal=True)                           # causal self-attention
        return self.head(h)                                          # (B, T, vocab)

    @mt.no_grad()
    def self_attention_map(self, x: mt.Tensor) -> np.ndarray:
        """Head-averaged causal self-attention weights of the last block for one batch: (B, T, T)."""
        h = self.pos(self.embed(x) * math.sqrt(self.cfg.d_model))
        for layer in self.blocks.layers[:-1]:
            h = layer(h, is_causal=True)
        last = self.blocks.layers[-1]
        _, w = last.self_attn(*(last.norm1(h),) * 3, need_weights=True, is_causal=True)
        return w.numpy()

    @mt.no_grad()
    def greedy(self, prompt: np.ndarray, steps: int, device="cpu") -> np.ndarray:
        out = prompt
        for _ in range(steps):
            nxt = self(mt.tensor(out, device=device))[:, -1].argmax(-1).numpy()
            out = np.concatenate([out, nxt[:, None]], axis=1)
        return out[:, prompt.shape[1]:]


def loss_fn(logits: mt.Tensor, target: np.ndarray, device="cpu", ignore_index: int = PAD) -> mt.Tensor:
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), mt.tensor(target.reshape(-1), device=device),
                           ignore_index=ignore_index)
