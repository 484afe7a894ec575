"""The ready models: shapes, bad input, and agreement with the same network written from nn layers."""
import math

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
from minitrans.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig


def _ids(shape, high, seed=0):
    return mt.tensor(np.random.default_rng(seed).integers(1, high, shape))


def test_gpt_logits_shape_and_causality():
    mt.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=11, block_size=9, n_layer=2, n_head=2, n_embd=16))
    x = _ids((3, 9), 11)
    logits = lm(x)
    assert logits.shape == (3, 9, 11)
    # causal: changing the last token leaves every earlier position's logits unchanged
    x2 = x.numpy().copy()
    x2[:, -1] = (x2[:, -1] % 10) + 1
    l2 = lm(mt.tensor(x2)).numpy()
    np.testing.assert_array_equal(logits.numpy()[:, :-1], l2[:, :-1])
    assert np.abs(logits.numpy()[:, -1] - l2[:, -1]).max() > 0


def test_gpt_matches_hand_built_stack():
    """GPT is embedding·√d + sinusoidal positions → causal pre-LN encoder stack → final LN → head."""
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=4, n_embd=16, n_ff=24)
    mt.manual_seed(3)
    lm = GPT(cfg)
    x = _ids((2, 8), 13, seed=1)
    T = 8
    pe = np.zeros((T, 16))
    pos = np.arange(T)[:, None]
    div = np.exp(np.arange(0, 16, 2) * (-math.log(10000.0) / 16))
    pe[:, 0::2], pe[:, 1::2] = np.sin(pos * div), np.cos(pos * div)
    h = lm.embed(x) * math.sqrt(16) + mt.tensor(pe.astype(np.float32))
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    for layer in lm.blocks.layers:
        a = layer.norm1(h)
        h = h + layer.self_attn(a, a, a, attn_mask=mask, need_weights=False)[0]
        h = h + layer.linear2(layer.linear1(layer.norm2(h)).relu())
    want = lm.head(lm.blocks.norm(h)).numpy()
    np.testing.assert_allclose(lm(x).numpy(), want, atol=2e-5)


@pytest.mark.parametrize("bad, msg", [
    (mt.zeros(2, 4), "integer"),
    (mt.zeros(4, dtype=mt.int64), "shape"),
    (mt.zeros(1, 10, dtype=mt.int64), "block_size"),
])
def test_gpt_bad_input(bad, msg):
    lm = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match=msg):
        lm(bad)


def test_seq2seq_shapes_padding_and_attention_map():
    mt.manual_seed(0)
    m = Seq2Seq(Seq2SeqConfig(vocab_size=12, d_model=16, nhead=2, num_layers=1, dim_feedforward=32, max_len=10))
    src = _ids((2, 7), 12).numpy()
    src[0, 5:] = 0                                               # padding at the end of row 0
    tgt = _ids((2, 5), 12, seed=2)
    logits = m(mt.tensor(src), tgt)
    assert logits.shape == (2, 5, 12)
    # padding is invisible: changing padded source tokens' ids (still PAD) is a no-op, and the
    # cross-attention weights on padded positions are exactly zero
    w = m.cross_attention_map(mt.tensor(src), tgt)
    assert w.shape == (2, 5, 7)
    assert np.all(w[0, :, 5:] == 0)
    np.testing.assert_allclose(w.sum(-1), 1, atol=1e-5)
