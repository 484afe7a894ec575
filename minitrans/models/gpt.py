"""A decoder-only (causal) transformer language model, nanoGPT style, with cached generation."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import autograd
from ..tensor import Tensor
from .. import nn
from ..nn import incremental
from .generation import GenerationCache, as_ids, check_ids, check_sampling, decode_loop, eval_mode

POS_ENCODINGS = ("sinusoidal", "rotary")


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
    pos_encoding: str = "sinusoidal"  # "sinusoidal" (added to the embeddings) or "rotary" (rotates q and k)


def check_pos_encoding(name: str, who: str) -> None:
    if name not in POS_ENCODINGS:
        raise ValueError(f"{who}: pos_encoding must be one of {', '.join(POS_ENCODINGS)}, got {name!r}")


def scaled_embedding(vocab_size: int, d: int) -> nn.Embedding:
    """Token embeddings drawn N(0, 1/d), so that embed·√d has unit scale, like the positional
    encoding added to it (with N(0, 1) the positions would be drowned by embeddings √d larger)."""
    embed = nn.Embedding(vocab_size, d)
    nn.init.normal_(embed.weight, 0.0, d ** -0.5)
    return embed


def scaled(h: Tensor, factor: float) -> Tensor:
    """h * factor; under no_grad on the array (one op less per decode step, the same product)."""
    if autograd.is_grad_enabled():
        return h * factor
    return Tensor._wrap(h._data * factor, h.device)


def add_rotary(attns, head_dim: int) -> None:
    """Give each self-attention module its rotary position embedding."""
    for a in attns:
        a.rotary = nn.RotaryEmbedding(head_dim)


class GPT(nn.Module):
    """Token embedding · √d (+ sinusoidal positions) → n_layer causal blocks → LayerNorm → logits."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        check_pos_encoding(c.pos_encoding, "GPTConfig")
        self.embed = scaled_embedding(c.vocab_size, c.n_embd)
        self.pos = nn.PositionalEncoding(c.n_embd, max_len=c.block_size) if c.pos_encoding == "sinusoidal" \
            else None
        layer = nn.TransformerEncoderLayer(c.n_embd, c.n_head, c.n_ff or 4 * c.n_embd, c.dropout,
                                           batch_first=True, norm_first=c.norm_first)
        self.blocks = nn.TransformerEncoder(layer, c.n_layer, nn.LayerNorm(c.n_embd))
        self.head = nn.Linear(c.n_embd, c.vocab_size)
        for p in self.blocks.parameters():
            if p.ndim > 1:
                nn.init.xavier_uniform_(p)
        if c.pos_encoding == "rotary":
            add_rotary((b.self_attn for b in self.blocks.layers), c.n_embd // c.n_head)

    def _check(self, idx: Tensor, past: int = 0) -> None:
        if idx.ndim != 2 or idx.dtype.is_floating_point:
            raise ValueError(f"GPT expects token ids of shape (batch, time) and an integer dtype, "
                             f"got shape {tuple(idx.shape)} and {idx.dtype}")
        if past + idx.shape[1] > self.config.block_size:
            raise ValueError(f"GPT: context of {past + idx.shape[1]} tokens exceeds block_size="
                             f"{self.config.block_size}")

    def _embed(self, idx: Tensor, offset: int = 0) -> Tensor:
        h = scaled(incremental.embedding_rows(self.embed, idx), math.sqrt(self.config.n_embd))   # (B, T, C)
        return h if self.pos is None else self.pos(h, offset)

    def _logits(self, h: Tensor) -> Tensor:
        out = incremental.output_head(self.head, h)                      # on arrays under no_grad
        return self.head(h) if out is None else out

    def forward(self, idx: Tensor, past_key_values: GenerationCache | None = None, use_cache: bool = False):
        """idx (B, T) -> logits (B, T, vocab); with ``use_cache=True`` -> (logits, cache), and a cache
        passed back as ``past_key_values`` makes idx the continuation of what it holds."""
        P = 0
        if past_key_values is not None:
            if not use_cache:
                raise ValueError("GPT: past_key_values was given without use_cache=True")
            past_key_values.check(self, idx.shape[0] if idx.ndim == 2 else -1)
            P = past_key_values.length
        self._check(idx, P)
        h = self._embed(idx, P)
        if not use_cache:
            return self._logits(self.blocks(h, is_causal=True))             # (B, T, vocab)
        h, layers = self.blocks(h, is_causal=True, use_cache=True,
                                past_key_values=None if past_key_values is None else past_key_values.layers)
        return self._logits(h), GenerationCache(self, layers, P + idx.shape[1])

    @autograd.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_token_id: int | None = None, use_cache: bool = True,
                 return_logits: bool = False):
        """Continue ``idx`` (B, T) by up to ``max_new_tokens`` tokens; returns (B, T + new) int64 ids.

        temperature 0 = greedy; otherwise sample from softmax(logits / temperature), optionally
        restricted by top_k / top_p. A row that produced ``eos_token_id`` is filled with it until
        every row has (then generation stops early). ``use_cache=False`` recomputes the whole
        context each step (the slow reference). ``return_logits=True`` also returns the logits
        each step chose from, (B, new, vocab) NumPy.
        """
        c = self.config
        ids = check_ids(idx, c.vocab_size, "GPT.generate", "prompt ids")
        check_sampling(max_new_tokens, temperature, top_k, top_p, eos_token_id, c.vocab_size, "GPT.generate")
        if ids.shape[1] + max_new_tokens > c.block_size:
            raise ValueError(f"GPT.generate: a prompt of {ids.shape[1]} tokens + max_new_tokens={max_new_tokens} "
                             f"needs a context of {ids.shape[1] + max_new_tokens}, more than block_size="
                             f"{c.block_size} supports")
        dev, state = idx.device, {"cache": None}

        def step(out: np.ndarray) -> np.ndarray:
            if not use_cache:
                return self(as_ids(out, dev))[:, -1].numpy()
            new = out if state["cache"] is None else out[:, -1:]
            logits, state["cache"] = self(as_ids(new, dev), past_key_values=state["cache"], use_cache=True)
            return logits[:, -1].numpy()

        with eval_mode(self):
            out, logits = decode_loop(step, ids, max_new_tokens, temperature, top_k, top_p, eos_token_id,
                                      eos_token_id if eos_token_id is not None else 0, return_logits)
        out = as_ids(out, dev)
        return (out, logits) if return_logits else out

    @autograd.no_grad()
    def self_attention_map(self, idx: Tensor) -> np.ndarray:
        """Head-averaged causal self-attention weights of the last block: (B, T, T)."""
        h = self._embed(idx)
        for layer in self.blocks.layers[:-1]:
            h = layer(h, is_causal=True)
        last = self.blocks.layers[-1]
        x = last.norm1(h) if last.norm_first else h
        _, w = last.self_attn(x, x, x, need_weights=True, is_causal=True)
        return w.numpy()

    def greedy(self, prompt: np.ndarray, steps: int, device="cpu") -> np.ndarray:
        """Greedy continuation of ``prompt`` (B, T0) for ``steps`` tokens: returns (B, steps) int64."""
        out = self.generate(as_ids(prompt, device), steps, temperature=0.0)
        return out.numpy()[:, prompt.shape[1]:]
