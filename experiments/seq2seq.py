"""Models for the toy tasks: an encoder–decoder (reversal) and a decoder-only LM (addition)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import minitrans as mt
import minitrans.nn as nn
import minitrans.nn.functional as F
from minitrans.data import PAD


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 20
    d_model: int = 64            # embedding width
    nhead: int = 4               # attention heads (head dim = d_model / nhead)
    num_layers: int = 2          # encoder layers = decoder layers
    dim_feedforward: int = 128
    dropout: float = 0.0
    positional: bool = True      # False: no positional encoding (order becomes invisible)
    max_len: int = 64


class Seq2Seq(nn.Module):
    """Token embeddings (+ sinusoidal positions) → nn.Transformer → logits over the vocabulary."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # N(0, 1/d) so that embed·√d has unit scale, like the positional encoding it is added to
        # (with N(0, 1) the positions would be drowned by embeddings 8x larger at d = 64)
        nn.init.normal_(self.embed.weight, 0.0, cfg.d_model ** -0.5)
        self.pos = nn.PositionalEncoding(cfg.d_model, max_len=cfg.max_len) if cfg.positional else nn.Identity()
        self.transformer = nn.Transformer(cfg.d_model, cfg.nhead, cfg.num_layers, cfg.num_layers,
                                          cfg.dim_feedforward, cfg.dropout, batch_first=True, norm_first=True)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def _embed(self, tokens: mt.Tensor) -> mt.Tensor:
        return self.pos(self.embed(tokens) * math.sqrt(self.cfg.d_model))

    def encode(self, src: mt.Tensor):
        src_pad = src == PAD                                         # (B, S) True = padding
        return self.transformer.encoder(self._embed(src), src_key_padding_mask=src_pad), src_pad

    def decode(self, tgt_in: mt.Tensor, memory: mt.Tensor, src_pad: mt.Tensor) -> mt.Tensor:
        T = tgt_in.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T).to(tgt_in.device)
        h = self.transformer.decoder(self._embed(tgt_in), memory, tgt_mask=causal,
                                     memory_key_padding_mask=src_pad)
        return self.head(h)                                          # (B, T, vocab)

    def forward(self, src: mt.Tensor, tgt_in: mt.Tensor) -> mt.Tensor:
        memory, src_pad = self.encode(src)
        return self.decode(tgt_in, memory, src_pad)

    @mt.no_grad()
    def greedy(self, src: mt.Tensor, bos: int, steps: int) -> np.ndarray:
        """Greedy decoding: feed back the argmax token for ``steps`` steps; returns (B, steps) int64."""
        memory, src_pad = self.encode(src)
        out = np.full((src.shape[0], 1), bos, np.int64)
        for _ in range(steps):
            logits = self.decode(mt.tensor(out, device=src.device), memory, src_pad)
            nxt = logits[:, -1].argmax(-1).numpy()
            out = np.concatenate([out, nxt[:, None]], axis=1)
        return out[:, 1:]

    @mt.no_grad()
    def cross_attention_map(self, src: mt.Tensor, tgt_in: mt.Tensor) -> np.ndarray:
        """Head-averaged cross-attention weights of the last decoder layer for one batch: (B, T, S)."""
        memory, src_pad = self.encode(src)
        dec = self.transformer.decoder
        x = self._embed(tgt_in)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1]).to(tgt_in.device)
        for layer in dec.layers[:-1]:
            x = layer(x, memory, tgt_mask=causal, memory_key_padding_mask=src_pad)
        last = dec.layers[-1]
        x = x + last._sa(last.norm1(x), causal, None, False)
        _, w = last.multihead_attn(last.norm2(x), memory, memory, key_padding_mask=src_pad, need_weights=True)
        return w.numpy()


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
