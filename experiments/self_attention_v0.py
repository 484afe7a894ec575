"""The worked example: self-attention over "cat chases mouse" with Q = K = V = X, d = 4.

Prints the raw scores Q·Kᵀ, the softmax weights of the scaled scores Q·Kᵀ/√d, and the
output P·V, each labelled by word, computed with minitrans's fused attention (and the raw
scores with a plain matmul). Run: python experiments/self_attention_v0.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np

import minitrans as mt
import minitrans.nn.functional as F

WORDS = ["cat", "chase", "mouse"]
VECTORS = [[1.0, 0.0, 0.5, 0.2],    # cat
           [0.0, 1.0, 0.0, 0.3],    # chase
           [0.5, 0.0, 1.0, 0.1]]    # mouse


def compute() -> dict:
    X = mt.tensor(VECTORS, dtype=mt.float64)             # (3 words, d = 4): a sentence is a matrix
    d = X.shape[-1]
    scores = X @ X.T                                      # Q·Kᵀ with Q = K = X
    weights = F.softmax(scores / math.sqrt(d), dim=-1)    # each row: how much a word attends to the others
    output = F.scaled_dot_product_attention(X, X, X)      # P·V, fused, scale 1/√d
    return {"words": WORDS, "scale": 1 / math.sqrt(d), "scores": scores.numpy().tolist(),
            "weights": weights.numpy().tolist(), "output": output.numpy().tolist()}


def _table(title: str, rows, cols, values, fmt: str) -> str:
    w = max(len(c) for c in cols + rows) + 2
    lines = [title, " " * w + "".join(c.rjust(w) for c in cols)]
    for r, vals in zip(rows, values):
        lines.append(r.ljust(w) + "".join(format(v, fmt).rjust(w) for v in vals))
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    r = compute()
    dims = [f"dim{i}" for i in range(4)]
    print(_table("raw scores Q·Kᵀ (row attends to column)", WORDS, WORDS, r["scores"], ".4f"))
    print()
    print(_table(f"attention weights softmax(Q·Kᵀ/√4) = softmax(scores × {r['scale']:.2f})", WORDS, WORDS,
                 r["weights"], ".4f"))
    print()
    print(_table("output P·V (one new vector per word)", WORDS, dims, r["output"], ".4f"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return r


if __name__ == "__main__":
    main()
