"""An encoder–decoder transformer translator (the story's model): source ids in, target logits out."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import autograd, nn
from ..tensor import Tensor, tensor


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 20          # shared source/target vocabulary
    d_model: int = 64             # embedding width
    nhead: int = 4                # attention heads (head dim = d_model / nhead)
    num_layers: int = 2           # encoder layers = decoder layers
    dim_feedforward: int = 128    # feed-forward width
    dropout: float = 0.0
    positional: bool = True       # False: no positional encoding (word order becomes invisible)
    max_len: int = 64             # longest source or target (positions are tabulated up to here)
    pad_id: int = 0               # padding token: masked out of attention
    norm_first: bool = True       # pre-LayerNorm layers (train stably without a careful warm-up)


class Seq2Seq(nn.Module):
    """Token embeddings · √d (+ sinusoidal positions) → nn.Transformer → logits over the vocabulary."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        # N(0, 1/d) so that embed·√d has unit scale, like the positional encoding it is added to
        # (with N(0, 1) the positions would be drowned by embeddings 8x larger at d = 64)
        nn.init.normal_(self.embed.weight, 0.0, c.d_model ** -0.5)
        self.pos = nn.PositionalEncoding(c.d_model, max_len=c.max_len) if c.positional else nn.Identity()
        self.transformer = nn.Transformer(c.d_model, c.nhead, c.num_layers, c.num_layers, c.dim_feedforward,
                                          c.dropout, batch_first=True, norm_first=c.norm_first)
        self.head = nn.Linear(c.d_model, c.vocab_size)

    def _embed(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 2 or tokens.dtype.is_floating_point:
            raise ValueError(f"Seq2Seq expects token ids of shape (batch, time) and an integer dtype, "
                             f"got shape {tuple(tokens.shape)} and {tokens.dtype}")
        return self.pos(self.embed(tokens) * math.sqrt(self.config.d_model))

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """(memory (B, S, d), source padding mask (B, S) True = padding)."""
        src_pad = src == self.config.pad_id
        return self.transformer.encoder(self._embed(src), src_key_padding_mask=src_pad), src_pad

    def decode(self, tgt_in: Tensor, memory: Tensor, src_pad: Tensor) -> Tensor:
        T = tgt_in.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T).to(tgt_in.device)
        h = self.transformer.decoder(self._embed(tgt_in), memory, tgt_mask=causal,
                                     memory_key_padding_mask=src_pad)
        return self.head(h)                                          # (B, T, vocab)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), tgt_in (B, T) token ids -> logits (B, T, vocab)."""
        memory, src_pad = self.encode(src)
        return self.decode(tgt_in, memory, src_pad)

    @autograd.no_grad()
    def greedy(self, src: Tensor, bos: int, steps: int) -> np.ndarray:
        """Greedy decoding: feed back the argmax token for ``steps`` steps; returns (B, steps) int64."""
        memory, src_pad = self.encode(src)
        out = np.full((src.shape[0], 1), bos, np.int64)
        for _ in range(steps):
            logits = self.decode(tensor(out, device=src.device), memory, src_pad)
            nxt = logits[:, -1].argmax(-1).numpy()
            out = np.concatenate([out, nxt[:, None]], axis=1)
        return out[:, 1:]

    @autograd.no_grad()
    def cross_attention_map(self, src: Tensor, tgt_in: Tensor) -> np.ndarray:
        """Head-averaged cross-attention weights of the last decoder layer: (B, T, S)."""
        memory, src_pad = self.encode(src)
        dec = self.transformer.decoder
        x = self._embed(tgt_in)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1]).to(tgt_in.device)
        for layer in dec.layers[:-1]:
            x = layer(x, memory, tgt_mask=causal, memory_key_padding_mask=src_pad)
        last = dec.layers[-1]
        if last.norm_first:
            x = x + last._sa(last.norm1(x), causal, None, False)
            q = last.norm2(x)
        else:
            q = last.norm1(x + last._sa(x, causal, None, False))
        _, w = last.multihead_attn(q, memory, memory, key_padding_mask=src_pad, need_weights=True)
        return w.numpy()
