"""A tiny training run shared by the checkpoint and determinism tests (not a test module).

The model has dropout, the batches are drawn from the global generator, the optimizer is
AdamW and the learning rate follows a warm-up + cosine schedule, so an exact resume needs
the parameters, the optimizer state, the schedule and the RNG state all restored.

    python tests/reliability/tiny_training.py SEED STEPS   # prints one loss per line (float.hex)
"""
from __future__ import annotations

import sys

import minitrans as mt
import minitrans.nn as nn
import minitrans.nn.functional as F

VOCAB, DIM, T, BATCH = 11, 16, 6, 4


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.drop = nn.Dropout(0.3)
        self.norm = nn.LayerNorm(DIM)
        self.attn = nn.MultiheadAttention(DIM, 2, dropout=0.2, batch_first=True)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, idx):
        x = self.drop(self.emb(idx))                                   # (B, T, DIM)
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False, is_causal=True)[0]
        return self.head(x)                                            # (B, T, VOCAB)


def make(seed: int, device: str = "cpu"):
    """(model, optimizer, scheduler), all fresh, weights drawn after ``manual_seed(seed)``, on ``device``."""
    mt.manual_seed(seed)
    model = Tiny()
    model.to(device)
    opt = mt.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.1)
    sched = mt.optim.lr_scheduler.WarmupCosineLR(opt, warmup_steps=3, total_steps=12)
    return model, opt, sched


def train_step(model, opt, sched) -> float:
    idx = mt.randint(0, VOCAB, (BATCH, T))                             # the batch comes from the RNG too
    target = mt.tensor((idx.numpy() + 1) % VOCAB)                      # predict the next symbol
    opt.zero_grad()
    loss = F.cross_entropy(model(idx).reshape(-1, VOCAB), target.reshape(-1))
    loss.backward()
    mt.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return float(loss.item())


def run(seed: int, steps: int) -> list[float]:
    model, opt, sched = make(seed)
    return [train_step(model, opt, sched) for _ in range(steps)]


if __name__ == "__main__":
    for loss in run(int(sys.argv[1]), int(sys.argv[2])):
        print(float.hex(loss))
