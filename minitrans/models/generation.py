"""What both model families share for ``generate``: argument checks, the model-level cache,
next-token selection (greedy, temperature, top-k, top-p) and the token-by-token loop.

Randomness comes from the global generator, so ``mt.manual_seed(s)`` makes sampling repeat.
Only the last position's logits (B, vocab) cross to the host each step.
"""
from __future__ import annotations

import weakref
from typing import Callable

import numpy as np

from ..random import generator
from ..tensor import Tensor, tensor


class GenerationCache:
    """Every layer's key/value cache for one model, and how many positions it has seen.

    ``layers``: per layer a ``KVCache`` (decoder-only) or a (self, cross) pair (encoder–decoder).
    """

    def __init__(self, model, layers: list, length: int) -> None:
        self._owner = weakref.ref(model)
        self.layers, self.length = layers, length

    @property
    def owner(self):
        return self._owner()

    @property
    def batch_size(self) -> int:
        first = self.layers[0]
        return (first[0] if isinstance(first, tuple) else first).batch_size

    def check(self, model, batch: int) -> None:
        if self.owner is not model:
            raise ValueError(f"{type(model).__name__}: past_key_values is a cache from another model; "
                             "pass the cache this model returned")
        if self.batch_size != batch:
            raise ValueError(f"{type(model).__name__}: the cache holds a batch of {self.batch_size}, "
                             f"the input has {batch}")

    def reorder(self, index: Tensor, static: bool = True) -> "GenerationCache":
        """The cache of batch rows ``index``; ``static=False`` leaves cross-attention caches as they are
        (beam search reorders hypotheses within a source, whose cross keys/values are all the same)."""
        def reordered(cache):
            return cache if (cache.static and not static) else cache.reorder(index)

        layers = [tuple(reordered(c) for c in layer) if isinstance(layer, tuple) else reordered(layer)
                  for layer in self.layers]
        return GenerationCache(self.owner, layers, self.length)


def check_ids(ids: Tensor, vocab_size: int, who: str, what: str = "token ids") -> np.ndarray:
    """The (B, T) ids as int64 NumPy, or a ValueError naming the problem."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{who}: {what} must be a Tensor of shape (batch, time), got {type(ids).__name__}")
    if ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype.name == "bool":
        raise ValueError(f"{who}: {what} must have shape (batch, time) and an integer dtype, "
                         f"got shape {tuple(ids.shape)} and {ids.dtype}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{who}: empty {what} (shape {tuple(ids.shape)}); give at least one token per row")
    a = ids.numpy().astype(np.int64)
    bad = (a < 0) | (a >= vocab_size)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{who}: {what} must lie in [0, {vocab_size}) (vocab_size), "
                         f"got {a[r, c]} at row {r}, position {c}")
    return a


def check_sampling(max_new_tokens, temperature, top_k, top_p, eos_token_id, vocab_size: int, who: str) -> None:
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"{who}: max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"{who}: temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"{who}: top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"{who}: top_p must be in (0, 1] or None, got {top_p!r}")
    if eos_token_id is not None and not (isinstance(eos_token_id, (int, np.integer))
                                         and 0 <= eos_token_id < vocab_size):
        raise ValueError(f"{who}: eos_token_id must be a token id in [0, {vocab_size}) or None, got {eos_token_id!r}")


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def next_tokens(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """One token per row of ``logits`` (B, V): argmax at temperature 0, else a draw from
    softmax(logits / temperature) restricted to the top_k tokens and to the smallest set whose
    probability reaches top_p (the most likely token is always kept)."""
    if temperature == 0:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    if top_p is not None and top_p < 1:
        order = np.argsort(-z, axis=-1, kind="stable")
        p = np.exp(log_softmax(np.take_along_axis(z, order, -1)))
        drop_sorted = np.cumsum(p, -1) - p >= top_p             # the mass before this token already reaches top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        z = np.where(drop, -np.inf, z)
    p = np.exp(log_softmax(z))
    u = generator().random(z.shape[0])[:, None]
    return np.minimum((np.cumsum(p, -1) < u * p.sum(-1, keepdims=True)).sum(-1), z.shape[-1] - 1)


def decode_loop(step: Callable, start: np.ndarray, max_new_tokens: int, temperature: float, top_k, top_p,
                eos_token_id, fill_id: int, return_logits: bool):
    """Append tokens to ``start`` (B, T0): ``step(ids, n_new)`` returns the last position's logits (B, V)
    as NumPy; rows that produced EOS are filled with ``fill_id`` and the loop ends when all have."""
    out, done, kept = start, np.zeros(start.shape[0], bool), []
    for _ in range(max_new_tokens):
        last = step(out)
        if return_logits:
            kept.append(last)
        nxt = next_tokens(last, temperature, top_k, top_p)
        if eos_token_id is not None:
            nxt = np.where(done, fill_id, nxt)
            done |= nxt == eos_token_id
        out = np.concatenate([out, nxt[:, None].astype(np.int64)], axis=1)
        if eos_token_id is not None and done.all():
            break
    return out, (np.stack(kept, 1) if kept else np.zeros((start.shape[0], 0, 0))) if return_logits else None


def as_ids(a: np.ndarray, device) -> Tensor:
    return tensor(np.ascontiguousarray(a, np.int64), device=device)


class eval_mode:
    """Run a block with the model in eval mode (dropout off), then restore its mode."""

    def __init__(self, model) -> None:
        self.model = model

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)
