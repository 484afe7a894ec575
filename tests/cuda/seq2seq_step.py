"""The tiny encoder-decoder (1 + 1 layers, d = 8) whose training step the CUDA tests run:
against the CPU, under the transfer spy, and under the launch / allocation / sync counters."""
import numpy as np

import minitrans.nn as nn
import minitrans.nn.functional as F


class Seq2Seq(nn.Module):
    def __init__(self, vocab=7, d=8):
        super().__init__()
        self.src_emb = nn.Embedding(vocab, d)
        self.tgt_emb = nn.Embedding(vocab, d)
        self.tf = nn.Transformer(d_model=d, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                 dim_feedforward=16, dropout=0.0, batch_first=True)
        self.out = nn.Linear(d, vocab)

    def forward(self, src, tgt, src_kpm):
        h = self.tf(self.src_emb(src), self.tgt_emb(tgt), src_key_padding_mask=src_kpm,
                    memory_key_padding_mask=src_kpm, tgt_is_causal=True)
        return self.out(h)


def _batch():
    src = np.array([[1, 2, 3, 4], [5, 6, 2, 0]])
    tgt_in = np.array([[1, 3, 2], [4, 4, 1]])
    tgt_out = np.array([[3, 2, 6], [4, 1, -100]])
    kpm = src == 0
    return src, tgt_in, tgt_out, kpm


def _forward_backward(model, src, tgt_in, tgt_out, kpm):
    logits = model(src, tgt_in, kpm)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), label_smoothing=0.05)
    loss.backward()
    return loss
