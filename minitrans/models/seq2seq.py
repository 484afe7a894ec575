"""An encoder–decoder transformer translator (the story's model): source ids in, target logits out."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import autograd, nn
from ..nn import incremental
from ..tensor import Tensor
from .beam import beam_search
from .generation import GenerationCache, as_ids, check_ids, check_sampling, decode_loop, eval_mode
from .gpt import add_rotary, check_pos_encoding, scaled, scaled_embedding


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 20          # shared source/target vocabulary
    d_model: int = 64             # embedding width
    nhead: int = 4                # attention heads (head dim = d_model / nhead)
    num_layers: int = 2           # encoder layers = decoder layers
    dim_feedforward: int = 128    # feed-forward width
    dropout: float = 0.0
    positional: bool = True       # False: no positional encoding (word order becomes invisible)
    max_len: int = 64             # longest source or target with sinusoidal positions (tabulated up to here)
    pad_id: int = 0               # padding token: masked out of attention
    norm_first: bool = True       # pre-LayerNorm layers (train stably without a careful warm-up)
    pos_encoding: str = "sinusoidal"  # or "rotary": self-attention queries/keys rotated, no length limit
    bos_id: int = 1               # the token the decoder starts from


class Seq2Seq(nn.Module):
    """Token embeddings · √d (+ sinusoidal positions) → nn.Transformer → logits over the vocabulary."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        check_pos_encoding(c.pos_encoding, "Seq2SeqConfig")
        self.embed = scaled_embedding(c.vocab_size, c.d_model)
        sinusoidal = c.positional and c.pos_encoding == "sinusoidal"
        self.pos = nn.PositionalEncoding(c.d_model, max_len=c.max_len) if sinusoidal else nn.Identity()
        self.transformer = nn.Transformer(c.d_model, c.nhead, c.num_layers, c.num_layers, c.dim_feedforward,
                                          c.dropout, batch_first=True, norm_first=c.norm_first)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        if c.positional and c.pos_encoding == "rotary":
            t = self.transformer
            add_rotary([la.self_attn for la in t.encoder.layers] + [la.self_attn for la in t.decoder.layers],
                       c.d_model // c.nhead)

    @property
    def max_positions(self) -> int | None:
        """The longest source or target the positional encoding supports (None: no limit)."""
        return self.config.max_len if isinstance(self.pos, nn.PositionalEncoding) else None

    def _embed(self, tokens: Tensor, offset: int = 0) -> Tensor:
        if tokens.ndim != 2 or tokens.dtype.is_floating_point:
            raise ValueError(f"Seq2Seq expects token ids of shape (batch, time) and an integer dtype, "
                             f"got shape {tuple(tokens.shape)} and {tokens.dtype}")
        h = scaled(incremental.embedding_rows(self.embed, tokens), math.sqrt(self.config.d_model))
        return self.pos(h, offset) if isinstance(self.pos, nn.PositionalEncoding) else h

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """(memory (B, S, d), source padding mask (B, S) True = padding)."""
        src_pad = src == self.config.pad_id
        return self.transformer.encoder(self._embed(src), src_key_padding_mask=src_pad), src_pad

    def decode(self, tgt_in: Tensor, memory: Tensor, src_pad: Tensor,
               past_key_values: GenerationCache | None = None, use_cache: bool = False):
        """Logits (B, T, vocab) for ``tgt_in``; with ``use_cache=True`` -> (logits, cache), and a cache
        passed back makes ``tgt_in`` the continuation (cross-attention keys/values come from the cache)."""
        if not use_cache:
            if past_key_values is not None:
                raise ValueError("Seq2Seq.decode: past_key_values was given without use_cache=True")
            T = tgt_in.shape[1]
            causal = nn.Transformer.generate_square_subsequent_mask(T).to(tgt_in.device)
            h = self.transformer.decoder(self._embed(tgt_in), memory, tgt_mask=causal,
                                         memory_key_padding_mask=src_pad)
            return self._logits(h)                                       # (B, T, vocab)
        P = 0
        if past_key_values is not None:
            past_key_values.check(self, tgt_in.shape[0])
            P = past_key_values.length
        h, layers = self.transformer.decoder(
            self._embed(tgt_in, P), memory, tgt_is_causal=True, memory_key_padding_mask=src_pad, use_cache=True,
            past_key_values=None if past_key_values is None else past_key_values.layers)
        return self._logits(h), GenerationCache(self, layers, P + tgt_in.shape[1])

    def _logits(self, h: Tensor) -> Tensor:
        out = incremental.output_head(self.head, h)                      # on arrays under no_grad
        return self.head(h) if out is None else out

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), tgt_in (B, T) token ids -> logits (B, T, vocab)."""
        memory, src_pad = self.encode(src)
        return self.decode(tgt_in, memory, src_pad)

    @autograd.no_grad()
    def generate(self, src: Tensor, max_new_tokens: int, *, beam_size: int = 1, length_penalty: float = 1.0,
                 temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 eos_token_id: int | None = None, bos_token_id: int | None = None, use_cache: bool = True,
                 return_logits: bool = False):
        """Translate ``src`` (B, S): returns (B, 1 + new) int64 ids starting with BOS.

        ``beam_size`` 1: greedy (temperature 0, the default) or sampling (temperature > 0, top_k,
        top_p). ``beam_size`` > 1: beam search over all B sources at once (B·beam_size rows),
        each finished hypothesis (EOS) scored sum(log p) / length^length_penalty, length counting
        the generated tokens with EOS; a source is done once beam_size hypotheses have finished.
        Rows that finished early are padded with ``pad_id``. ``return_logits`` (greedy/sampling
        only) also returns the logits each step chose from, (B, new, vocab) NumPy.
        """
        c, who = self.config, "Seq2Seq.generate"
        src_ids = check_ids(src, c.vocab_size, who, "source ids")
        check_sampling(max_new_tokens, temperature, top_k, top_p, eos_token_id, c.vocab_size, who)
        bos = c.bos_id if bos_token_id is None else bos_token_id
        check_ids(as_ids(np.array([[bos]]), "cpu"), c.vocab_size, who, "bos_token_id")
        if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
            raise ValueError(f"{who}: beam_size must be a positive int, got {beam_size!r}")
        if beam_size > 1 and (temperature != 0 or top_k is not None or top_p is not None or return_logits):
            raise ValueError(f"{who}: beam search is deterministic: leave temperature at 0, top_k/top_p at None "
                             f"and return_logits False when beam_size > 1")
        limit = self.max_positions
        if limit is not None and (src_ids.shape[1] > limit or 1 + max_new_tokens > limit):
            raise ValueError(f"{who}: a source of {src_ids.shape[1]} tokens and a target of 1 + {max_new_tokens} "
                             f"tokens need positions up to {max(src_ids.shape[1], 1 + max_new_tokens)}, more than "
                             f"max_len={limit} of the sinusoidal table supports")
        with eval_mode(self):
            memory, src_pad = self.encode(src)
            start = np.full((src_ids.shape[0], 1), bos, np.int64)
            if beam_size > 1:
                return as_ids(beam_search(DecodeStep(self, memory, src_pad, use_cache), start, max_new_tokens,
                                          beam_size, float(length_penalty), eos_token_id, c.pad_id), src.device)
            out, logits = decode_loop(DecodeStep(self, memory, src_pad, use_cache), start, max_new_tokens,
                                      temperature, top_k, top_p, eos_token_id, c.pad_id, return_logits)
        out = as_ids(out, src.device)
        return (out, logits) if return_logits else out

    def greedy(self, src: Tensor, bos: int, steps: int) -> np.ndarray:
        """Greedy decoding: feed back the argmax token for ``steps`` steps; returns (B, steps) int64."""
        return self.generate(src, steps, bos_token_id=bos).numpy()[:, 1:]

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


class DecodeStep:
    """step(ids (B, t)) -> the last position's logits (B, vocab) as NumPy, with or without the cache.

    ``select(rows)`` keeps batch rows ``rows`` (beam search: expand each source to its beams, then
    follow the surviving hypotheses; ``same_source=True`` means rows only move within a source,
    whose memory and cross-attention keys/values are shared, so those stay as they are)."""

    def __init__(self, model: Seq2Seq, memory: Tensor, src_pad: Tensor, use_cache: bool) -> None:
        self.model, self.memory, self.src_pad, self.use_cache, self.cache = model, memory, src_pad, use_cache, None

    def __call__(self, out: np.ndarray) -> np.ndarray:
        dev = self.memory.device
        if not self.use_cache:
            return self.model.decode(as_ids(out, dev), self.memory, self.src_pad)[:, -1].numpy()
        new = out if self.cache is None else out[:, -1:]
        logits, self.cache = self.model.decode(as_ids(new, dev), self.memory, self.src_pad, self.cache, True)
        return logits[:, -1].numpy()

    def select(self, rows: np.ndarray, same_source: bool) -> None:
        idx = as_ids(rows, self.memory.device)
        if not same_source:
            self.memory, self.src_pad = self.memory[idx], self.src_pad[idx]
        if self.cache is not None:
            self.cache = self.cache.reorder(idx, static=not same_source)
