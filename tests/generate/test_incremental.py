"""The inference path of cached decoding (``minitrans.nn.incremental``) and its pieces.

The kernels are checked against NumPy written here; the stacks' cached steps against the same
stack run on the whole sequence at once through the Tensor code (a causal mask, no cache); the
growing cache for the value semantics a caller relies on (an old cache never changes).
"""
import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
from minitrans.kernels.cpu import decode
from minitrans.models import GPT, GPTConfig
from minitrans.nn import incremental


def np_attention(q, k, v, past, causal, key_bias, scale):
    """q (B, T, H, d), k/v (B, H, L, d): masked softmax attention in float64, one (b, h, t) at a time."""
    B, T, H, d = q.shape
    L = k.shape[2]
    out = np.zeros((B, T, H, d))
    for b in range(B):
        for h in range(H):
            for t in range(T):
                s = np.array([q[b, t, h] @ k[b, h, j] * scale for j in range(L)], np.float64)
                if key_bias is not None:
                    s = s + key_bias[b]
                if causal:
                    s[past + t + 1:] = -np.inf
                if np.isfinite(s).any():
                    p = np.exp(s - s.max())
                    out[b, t, h] = (p / p.sum()) @ v[b, h]
    return out


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("causal", [True, False])
def test_cached_attention_kernel_reads_the_valid_rows_of_larger_buffers(dtype, tol, causal):
    rng = np.random.default_rng(0)
    B, T, H, d, cap, L, past = 2, 3, 2, 8, 50, 33, 30
    q = rng.standard_normal((B, T, 3, H, d)).astype(dtype)[:, :, 0]          # a strided view, as in the model
    k, v = (rng.standard_normal((B, H, cap, d)).astype(dtype) for _ in range(2))
    k[:, :, L:] = v[:, :, L:] = np.nan                                       # rows past `length` must not be read
    bias = np.zeros((B, L), dtype)
    bias[1, 4:] = -np.inf                                                    # padding
    for kb in (None, bias):
        got = decode.cached_attention(q, k, v, L, past, causal, kb, 0.3)
        want = np_attention(q.astype(np.float64), k[:, :, :L], v[:, :, :L], past, causal, kb, 0.3)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        np.testing.assert_allclose(decode.cached_attention_reference(q, k, v, L, past, causal, kb, 0.3), want,
                                   rtol=tol, atol=tol)


def test_cached_attention_kernel_gives_zeros_when_every_key_is_masked():
    q, k = np.ones((1, 1, 1, 4), np.float32), np.ones((1, 1, 6, 4), np.float32)
    out = decode.cached_attention(q, k, k, 6, 5, False, np.full((1, 6), -np.inf, np.float32), 0.5)
    assert np.all(out == 0)


def test_add_layer_norm_kernel():
    rng = np.random.default_rng(1)
    x, delta = rng.standard_normal((2, 3, 16)) * 3 + 1, rng.standard_normal((2, 3, 16))
    w, b = rng.standard_normal(16), rng.standard_normal(16)
    s = x + delta
    want = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-5) * w + b
    y = decode.add_layer_norm(x, delta, w, b, 1e-5)
    np.testing.assert_allclose(x, s, rtol=0, atol=1e-15)                     # the residual is updated in place
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(decode.add_layer_norm(s.copy(), None, w, b, 1e-5), want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- stacks
def _x(shape, seed):
    return mt.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=mt.float64)


def _stack(decoder, norm_first, rotary, seed=0, bias=True):
    mt.manual_seed(seed)
    cls_layer, cls_stack = (nn.TransformerDecoderLayer, nn.TransformerDecoder) if decoder else \
        (nn.TransformerEncoderLayer, nn.TransformerEncoder)
    layer = cls_layer(16, 4, 32, 0.1, batch_first=True, norm_first=norm_first, bias=bias)
    stack = cls_stack(layer, 2, nn.LayerNorm(16) if norm_first else None).to(mt.float64).eval()
    if rotary:
        for la in stack.layers:
            la.self_attn.rotary = nn.RotaryEmbedding(4)
    return stack


def _steps(run, x, cuts):
    """run(chunk, past) -> (out, cache) over x cut at ``cuts``: the outputs joined along time."""
    outs, past = [], None
    for a, b in zip(cuts[:-1], cuts[1:]):
        out, past = run(x[:, a:b], past)
        outs.append(out.numpy())
    return np.concatenate(outs, 1), past


@pytest.fixture(params=["one kernel per layer", "array ops"])
def fused(request, monkeypatch):
    """Steps of a few rows run each layer as one host kernel call, or as the per-op array code
    (the path of layers without biases and of other devices): both must hold."""
    monkeypatch.setattr(incremental, "FUSE_LAYERS", request.param == "one kernel per layer")


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = incremental.run_stack

    def counted(*args, **kwargs):
        calls.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(incremental, "run_stack", counted)
    return calls


# a 20-token prefix (more than FEW_QUERIES: the backend's tiled kernel), then 1, 3 and 1 token (the cache kernel)
CUTS = [0, 20, 21, 24, 25]


@pytest.mark.parametrize("norm_first, rotary", [(True, False), (False, False), (True, True), ("mixed", False)])
def test_encoder_stack_steps_equal_the_whole_sequence(spy, fused, norm_first, rotary):
    stack = _stack(False, norm_first is True, rotary)
    if norm_first == "mixed":                                              # pre-LN, then post-LN
        stack.layers[0].norm_first = True
    x = _x((2, CUTS[-1], 16), 1)
    causal = nn.Transformer.generate_square_subsequent_mask(CUTS[-1], dtype=mt.float64)
    with mt.no_grad():
        full = stack(x, mask=causal, is_causal=True).numpy()
        got, cache = _steps(lambda c, p: stack(c, is_causal=True, use_cache=True, past_key_values=p), x, CUTS)
    assert len(spy) == 4 and cache[0].length == CUTS[-1] and cache[0].key.shape == (2, 4, CUTS[-1], 4)
    np.testing.assert_allclose(got, full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_decoder_stack_steps_equal_the_whole_sequence_with_source_padding(spy, fused, norm_first, bias):
    stack = _stack(True, norm_first, False, seed=1, bias=bias)
    tgt, mem = _x((3, CUTS[-1], 16), 2), _x((3, 7, 16), 3)
    pad = mt.tensor(np.array([[False] * 7, [False] * 4 + [True] * 3, [True] * 7]))   # the last row: all padding
    causal = nn.Transformer.generate_square_subsequent_mask(CUTS[-1], dtype=mt.float64)
    with mt.no_grad():
        full = stack(tgt, mem, tgt_mask=causal, memory_key_padding_mask=pad).numpy()
        got, cache = _steps(lambda c, p: stack(c, mem, tgt_is_causal=True, memory_key_padding_mask=pad,
                                               use_cache=True, past_key_values=p), tgt, CUTS)
    assert len(spy) == 4 and cache[0][0].length == CUTS[-1] and cache[0][1].length == 7 and cache[0][1].static
    np.testing.assert_allclose(got, full, rtol=1e-10, atol=1e-10)


def test_the_tensor_path_runs_with_gradients_hooks_or_active_dropout(spy):
    stack = _stack(False, True, False)
    x = _x((1, 4, 16), 4)
    out, _ = stack(x, is_causal=True, use_cache=True)                     # gradients on: the graph is built
    assert out.requires_grad and not spy
    out.sum().backward()
    assert stack.layers[0].linear1.weight.grad is not None
    with mt.no_grad():
        stack.train()                                                      # dropout 0.1 active
        stack(x, is_causal=True, use_cache=True)
        stack.eval()
        handle = stack.layers[1].linear2.register_forward_hook(lambda m, a, o: None)
        stack(x, is_causal=True, use_cache=True)
        assert not spy
        handle.remove()
        stack(x, is_causal=True, use_cache=True)


def test_a_tensor_path_cache_and_an_array_path_cache_continue_each_other():
    stack = _stack(False, True, False)
    x = _x((2, 6, 16), 5)
    causal = nn.Transformer.generate_square_subsequent_mask(6, dtype=mt.float64)
    full = stack(x, mask=causal, is_causal=True).detach().numpy()
    a, cache = stack(x[:, :3], is_causal=True, use_cache=True)           # Tensor path (gradients on)
    with mt.no_grad():
        b, cache = stack(x[:, 3:5], is_causal=True, use_cache=True, past_key_values=cache)
    c, _ = stack(x[:, 5:], is_causal=True, use_cache=True, past_key_values=cache)
    np.testing.assert_allclose(np.concatenate([a.detach().numpy(), b.numpy(), c.detach().numpy()], 1), full,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cuts", [[0, 1, 2, 3], [0, 2, 3]])
def test_the_tiled_kernel_serves_cached_steps_too(monkeypatch, cuts):
    """With the cache kernel switched off (FEW_QUERIES = 0) every step takes the backend kernel on a
    copy of the cache with a bottom-right causal bias: the path other devices use."""
    monkeypatch.setattr(incremental, "FEW_QUERIES", 0)
    stack = _stack(False, True, True)
    x = _x((2, cuts[-1], 16), 6)
    causal = nn.Transformer.generate_square_subsequent_mask(cuts[-1], dtype=mt.float64)
    with mt.no_grad():
        full = stack(x, mask=causal, is_causal=True).numpy()
        got, _ = _steps(lambda c, p: stack(c, is_causal=True, use_cache=True, past_key_values=p), x, cuts)
    np.testing.assert_allclose(got, full, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- the growing cache
def test_caches_are_values_appends_share_a_buffer_and_a_second_branch_copies():
    mt.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=11, block_size=64, n_layer=1, n_head=2, n_embd=8)).eval()
    with mt.no_grad():
        _, c0 = lm(mt.tensor(np.array([[1, 2, 3]])), use_cache=True)
        la, a = lm(mt.tensor(np.array([[4]])), past_key_values=c0, use_cache=True)
        _, a2 = lm(mt.tensor(np.array([[5]])), past_key_values=a, use_cache=True)
        k_a = a.layers[0].key.numpy().copy()
        assert a2.layers[0].store is a.layers[0].store is c0.layers[0].store     # appended in place
        lb, b = lm(mt.tensor(np.array([[7]])), past_key_values=c0, use_cache=True)   # a second branch from c0
        assert b.layers[0].store is not c0.layers[0].store
        np.testing.assert_array_equal(a.layers[0].key.numpy(), k_a)             # branch a is untouched
        la2, _ = lm(mt.tensor(np.array([[4]])), past_key_values=c0, use_cache=True)
        np.testing.assert_array_equal(la2.numpy(), la.numpy())
        full = lm(mt.tensor(np.array([[1, 2, 3, 7]])))
        np.testing.assert_allclose(lb.numpy(), full.numpy()[:, -1:], rtol=1e-5, atol=1e-6)
        r = b.reorder(mt.tensor(np.array([0, 0])))
        assert r.batch_size == 2 and r.layers[0].store.capacity == b.layers[0].store.capacity
        np.testing.assert_array_equal(r.layers[0].value.numpy()[1], b.layers[0].value.numpy()[0])
