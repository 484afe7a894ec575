"""Toy sequence tasks: reversal (encoder–decoder) and addition (decoder-only), with batching.

Every task draws from its own ``np.random.Generator`` so a seed fixes the data stream, and
keeps a held-out set that training batches never contain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD, BOS, EOS = 0, 1, 2


def _count_try(tries: int, n: int, exclude) -> int:
    if tries > 1000 * (n + 10):
        raise ValueError(f"could not draw {n} examples outside the held-out set of {len(exclude or ())}: "
                         "the held-out set covers (nearly) the whole task; make it smaller")
    return tries + 1


@dataclass
class ReverseTask:
    """Reverse a random token sequence: src = s, tgt = BOS + reversed(s) + EOS (PAD-padded)."""

    n_symbols: int = 17          # symbols 3 .. 3+n_symbols-1; vocab = n_symbols + 3 (PAD, BOS, EOS)
    min_len: int = 4
    max_len: int = 16

    @property
    def vocab_size(self) -> int:
        return self.n_symbols + 3

    def sample(self, rng: np.random.Generator, n: int, exclude: set | None = None) -> list[tuple[int, ...]]:
        out, tries = [], 0
        while len(out) < n:
            tries = _count_try(tries, n, exclude)
            L = int(rng.integers(self.min_len, self.max_len + 1))
            s = tuple(int(x) for x in rng.integers(3, 3 + self.n_symbols, size=L))
            if exclude is None or s not in exclude:
                out.append(s)
        return out

    def batch(self, seqs: list[tuple[int, ...]]):
        """(src (B, S), tgt_in (B, T), tgt_out (B, T)) int64 arrays, PAD-padded; T = max_len + 1."""
        B, S = len(seqs), self.max_len
        src = np.full((B, S), PAD, np.int64)
        tgt = np.full((B, S + 2), PAD, np.int64)
        for i, s in enumerate(seqs):
            src[i, :len(s)] = s
            tgt[i, 0] = BOS
            tgt[i, 1:len(s) + 1] = s[::-1]
            tgt[i, len(s) + 1] = EOS
        return src, tgt[:, :-1], tgt[:, 1:]

    def target(self, s: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s[::-1])


@dataclass
class AdditionTask:
    """"123+456=" → "579": a decoder-only model reads the problem and writes the sum, then EOS.

    Tokens: PAD 0, BOS 1, EOS 2, digits 3..12, '+' 13, '=' 14. Operands are drawn from
    [0, 10^n_digits) and written zero-padded to n_digits ("007+120="), so every prompt has the
    same length and digit i of each operand sits at a fixed position; the answer is written
    without leading zeros ("127").
    """

    n_digits: int = 3

    vocab_size: int = 15
    PLUS, EQ = 13, 14

    @property
    def prompt_len(self) -> int:
        return 1 + 2 * self.n_digits + 2          # BOS a + b =

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.n_digits + 2  # answer digits (≤ n+1) and EOS

    def sample(self, rng: np.random.Generator, n: int, exclude: set | None = None) -> list[tuple[int, int]]:
        out, tries = [], 0
        hi = 10 ** self.n_digits
        while len(out) < n:
            tries = _count_try(tries, n, exclude)
            a, b = int(rng.integers(0, hi)), int(rng.integers(0, hi))
            if exclude is None or (a, b) not in exclude:
                out.append((a, b))
        return out

    def encode(self, text: str) -> list[int]:
        table = {**{str(d): 3 + d for d in range(10)}, "+": self.PLUS, "=": self.EQ}
        return [table[c] for c in text]

    def decode(self, toks) -> str:
        inv = {**{3 + d: str(d) for d in range(10)}, self.PLUS: "+", self.EQ: "="}
        return "".join(inv.get(int(t), "") for t in toks)

    def prompt(self, a: int, b: int) -> list[int]:
        n = self.n_digits
        return [BOS] + self.encode(f"{a:0{n}d}+{b:0{n}d}=")

    def batch(self, problems: list[tuple[int, int]]):
        """(x (B, T), y (B, T)) next-token pairs; y is −100 (ignored) on the prompt and padding."""
        B, T = len(problems), self.seq_len
        seq = np.full((B, T + 1), PAD, np.int64)
        y_mask = np.zeros((B, T + 1), bool)
        for i, (a, b) in enumerate(problems):
            p = self.prompt(a, b)
            ans = self.encode(str(a + b)) + [EOS]
            seq[i, :len(p) + len(ans)] = p + ans
            y_mask[i, len(p):len(p) + len(ans)] = True
        x, y = seq[:, :-1], seq[:, 1:].copy()
        y[~y_mask[:, 1:]] = -100
        return x, y
