"""The key/value cache of MultiheadAttention and the layers, and rotary position embeddings.

Incremental attention (a prefix, then one or a few steps at a time) must equal the same
module run on the whole sequence at once; rotary embeddings are checked against a NumPy
rotation written here, for the relative-position property, and by float64 gradcheck.
"""
import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
from minitrans.backends.cpu import CPUBackend


def _x(shape, seed=0):
    return mt.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=mt.float64)


def _mha(E=8, H=2, rotary=False, seed=0):
    mt.manual_seed(seed)
    m = nn.MultiheadAttention(E, H, batch_first=True).to(mt.float64)
    if rotary:
        m.rotary = nn.RotaryEmbedding(E // H)
    return m


@pytest.mark.parametrize("rotary", [False, True])
def test_incremental_self_attention_equals_full_causal(rotary):
    m = _mha(rotary=rotary)
    x = _x((2, 7, 8))
    full = m(x, x, x, need_weights=False, is_causal=True)[0].numpy()
    # a 2-token prefix, then 1, then 3 at once (query i at absolute position past + i), then 1
    outs, cache = [], None
    for a, b in ((0, 2), (2, 3), (3, 6), (6, 7)):
        xs = x[:, a:b]
        o, _, cache = m(xs, xs, xs, need_weights=False, is_causal=True, past_key_value=cache, use_cache=True)
        outs.append(o.numpy())
        assert cache.length == b and cache.key.shape == (2, 2, b, 4)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, rtol=1e-10, atol=1e-12)


def test_cross_attention_cache_computed_once_and_padding_respected():
    m = _mha(seed=1)
    mem, q = _x((2, 5, 8), 1), _x((2, 4, 8), 2)
    pad = mt.tensor(np.array([[False] * 5, [False, False, False, True, True]]))
    full = m(q, mem, mem, key_padding_mask=pad, need_weights=False)[0].numpy()
    cache, outs = None, []
    for t in range(4):
        o, _, cache = m(q[:, t:t + 1], mem, mem, key_padding_mask=pad, need_weights=False,
                        past_key_value=cache, use_cache=True, static_kv=True)
        outs.append(o.numpy())
        assert cache.static and cache.length == 5          # keys of the source, never grown
    np.testing.assert_allclose(np.concatenate(outs, 1), full, rtol=1e-10, atol=1e-12)


def test_decoder_layer_passes_both_caches():
    mt.manual_seed(2)
    layer = nn.TransformerDecoderLayer(8, 2, 16, 0.0, batch_first=True, norm_first=False).to(mt.float64)
    tgt, mem = _x((3, 5, 8), 3), _x((3, 4, 8), 4)
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=mt.float64)
    full = layer(tgt, mem, tgt_mask=causal).numpy()
    past, outs = None, []
    for t in range(5):
        o, past = layer(tgt[:, t:t + 1], mem, tgt_is_causal=True, past_key_value=past, use_cache=True)
        outs.append(o.numpy())
    assert past[0].length == 5 and past[1].length == 4
    np.testing.assert_allclose(np.concatenate(outs, 1), full, rtol=1e-10, atol=1e-12)


def test_one_query_row_against_a_long_cache_uses_the_fused_kernel(monkeypatch):
    """A step against L cached keys calls the tiled attention kernel with Tq = 1 (no L×L scores)
    on the cache itself."""
    m = _mha(seed=3).to(mt.float32)
    L = 300                                             # beyond the short-sequence path: the tiled kernel
    x = mt.tensor(np.random.default_rng(5).standard_normal((1, L + 1, 8)).astype(np.float32))
    _, _, cache = m(x[:, :L], x[:, :L], x[:, :L], need_weights=False, is_causal=True, use_cache=True)
    shapes, real = [], CPUBackend.attention_forward

    def spy(q, k, v, bias, is_causal, scale):
        shapes.append((q.shape, k.shape, bias is None, is_causal))
        return real(q, k, v, bias, is_causal, scale)

    monkeypatch.setattr(CPUBackend, "attention_forward", staticmethod(spy))
    xs = x[:, L:]
    o, _, cache = m(xs, xs, xs, need_weights=False, is_causal=True, past_key_value=cache, use_cache=True)
    assert shapes == [((2, 1, 4), (2, L + 1, 4), True, False)]
    # the cache is kept C-contiguous (B, H, L, hd), so the kernel reads it without a copy per step
    assert cache.key._data.flags.c_contiguous and cache.value._data.flags.c_contiguous
    full = m(x, x, x, need_weights=False, is_causal=True)[0].numpy()[:, L:]
    np.testing.assert_allclose(o.numpy(), full, rtol=1e-4, atol=1e-5)


def test_bad_caches_are_refused_with_a_clear_error():
    m, other = _mha(seed=4), _mha(seed=5)
    x = _x((2, 3, 8))
    _, _, cache = m(x, x, x, is_causal=True, use_cache=True)
    with pytest.raises(ValueError, match="another attention module"):
        other(x, x, x, past_key_value=cache, use_cache=True)
    with pytest.raises(ValueError, match="batch of 2"):
        m(x[:1], x[:1], x[:1], past_key_value=cache, use_cache=True)
    with pytest.raises(ValueError, match="static_kv"):
        m(x, x, x, past_key_value=cache, use_cache=True, static_kv=True)
    with pytest.raises(TypeError, match="KVCache"):
        m(x, x, x, past_key_value=(cache.key, cache.value), use_cache=True)
    layer = nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True)
    with pytest.raises(ValueError, match="use_cache=True"):
        layer(x.float(), past_key_value=cache)


# ----------------------------------------------------------------------------- rotary
def np_rope(x, offset, base=10000.0):
    """Rotate feature pairs (x[i], x[i + d/2]) at position t by t·base^(-2i/d)."""
    d, T = x.shape[-1], x.shape[-2]
    ang = np.arange(offset, offset + T)[:, None] * base ** (-np.arange(0, d, 2) / d)[None, :]
    c, s = np.cos(ang), np.sin(ang)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)


@pytest.mark.parametrize("shape, offset", [((2, 3, 5, 8), 0), ((1, 1, 1, 2), 7), ((3, 4, 6), 123)])
def test_rotary_matches_numpy_and_gradcheck(shape, offset):
    rope = nn.RotaryEmbedding(shape[-1])
    a = np.random.default_rng(6).standard_normal(shape)
    x = mt.tensor(a, dtype=mt.float64, requires_grad=True)
    np.testing.assert_allclose(rope(x, offset).numpy(), np_rope(a, offset), rtol=1e-12, atol=1e-12)
    xt = mt.tensor(a.transpose(*range(a.ndim - 2), a.ndim - 1, a.ndim - 2).copy(), dtype=mt.float64)
    nc = xt.transpose(-1, -2)                           # a non-contiguous view of the same values
    np.testing.assert_allclose(rope(nc, offset).numpy(), np_rope(a, offset), rtol=1e-12, atol=1e-12)
    assert mt.autograd.gradcheck(lambda t: rope(t, offset), [x])
    f32 = rope(mt.tensor(a.astype(np.float32)), offset)
    assert f32.dtype is mt.float32
    np.testing.assert_allclose(f32.numpy(), np_rope(a, offset), rtol=1e-4, atol=1e-5)


def test_rotary_scores_depend_on_relative_position_only():
    rope = nn.RotaryEmbedding(16)
    q, k = (mt.tensor(np.random.default_rng(s).standard_normal((1, 16)), dtype=mt.float64) for s in (7, 8))

    def score(m, n):
        return float((rope(q, m) * rope(k, n)).sum().item())

    assert score(3, 1) == pytest.approx(score(103, 101), abs=1e-9)
    assert score(0, 5) == pytest.approx(score(40, 45), abs=1e-9)
    assert abs(score(3, 1) - score(3, 2)) > 1e-3         # but it does see the distance


def test_rotary_bad_input():
    with pytest.raises(ValueError, match="even"):
        nn.RotaryEmbedding(5)
    rope = nn.RotaryEmbedding(4)
    with pytest.raises(ValueError, match="head_dim=4"):
        rope(mt.zeros(2, 3, 6))
    with pytest.raises(ValueError, match="offset"):
        rope(mt.zeros(2, 3, 4), -1)
    with pytest.raises(TypeError, match="floating"):
        rope(mt.zeros(2, 3, 4, dtype=mt.int64))
