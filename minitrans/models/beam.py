"""Batched beam search for the translator: every source keeps ``beam_size`` hypotheses, all decoded
as one batch of B·beam_size rows.

Each step scores every (hypothesis, next token) pair by sum(log p), keeps the 2·beam_size best
per source, and walks them best first: an EOS among the first beam_size finishes that
hypothesis (score / length^length_penalty, length = generated tokens with EOS); the best
non-EOS ones become the next beams. A source is done once beam_size hypotheses have finished
(fairseq's rule: with beam_size 1 this is exactly greedy decoding); at ``max_new_tokens`` the
unfinished beams are scored too. The first step runs on the B sources alone (one hypothesis
each), so the encoder output and the cross-attention keys/values are computed once per source
and then copied to its beams.
"""
from __future__ import annotations

import numpy as np

from .generation import log_softmax


def beam_search(step, start: np.ndarray, max_new_tokens: int, K: int, length_penalty: float,
                eos: int | None, pad_id: int) -> np.ndarray:
    """``step`` as ``DecodeStep`` (call + ``select``); ``start`` (B, 1) BOS ids -> (B, 1 + L) best hypotheses."""
    B = start.shape[0]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = np.zeros(B, bool)
    seqs, scores, Kc = start, np.zeros((B, 1)), 1                      # rows (B·Kc, t), running sum log p
    for t in range(max_new_tokens):
        logp = log_softmax(step(seqs).astype(np.float64))                # (B·Kc, V)
        V = logp.shape[-1]
        cand = (scores[:, :, None] + logp.reshape(B, Kc, V)).reshape(B, Kc * V)
        top = np.argsort(-cand, axis=1, kind="stable")[:, :2 * K]        # best first
        parent, token, score = [], [], []
        for b in range(B):
            keep = []
            for rank, c in enumerate(top[b]):
                beam, tok = divmod(int(c), V)
                if eos is not None and tok == eos:
                    if rank < K and not done[b]:
                        norm = cand[b, c] / float(t + 1) ** length_penalty
                        finished[b].append((norm, seqs[b * Kc + beam, 1:].tolist() + [eos]))
                    continue
                keep.append((b * Kc + beam, tok, cand[b, c]))
                if len(keep) == K:
                    break
            while len(keep) < K:                                        # too few tokens besides EOS
                keep.append((b * Kc, pad_id, -np.inf))
            done[b] |= len(finished[b]) >= K
            for p, tok, sc in keep:
                parent.append(p)
                token.append(tok)
                score.append(sc)
        if done.all():
            break
        parent = np.asarray(parent)
        seqs = np.concatenate([seqs[parent], np.asarray(token, np.int64)[:, None]], axis=1)
        scores = np.asarray(score).reshape(B, K)
        step.select(parent, same_source=Kc == K)
        Kc = K
    else:
        n = seqs.shape[1] - 1
        for b in np.flatnonzero(~done):
            for j in range(Kc):
                finished[b].append((scores[b, j] / float(max(n, 1)) ** length_penalty, seqs[b * Kc + j, 1:].tolist()))
    best = [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]
    out = np.full((B, 1 + max(len(h) for h in best)), pad_id, np.int64)
    out[:, 0] = start[:, 0]
    for b, h in enumerate(best):
        out[b, 1:1 + len(h)] = h
    return out
