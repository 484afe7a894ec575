"""``generate`` on both model families: the cache changes nothing but speed, beam search,
sampling, and clear errors for bad requests.

Model scores for the beam-search checks are recomputed here by a teacher-forced forward
and a NumPy log-softmax, independently of the search's own bookkeeping.
"""
import importlib.util
import itertools
import pathlib

import numpy as np
import pytest

import minitrans as mt
from minitrans.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
from minitrans.models.generation import next_tokens

EOS = 2

# the CUDA tests' small simulator tiles (autouse fixture, module scope), shared, not copied
_spec = importlib.util.spec_from_file_location("cuda_conftest",
                                               pathlib.Path(__file__).parents[1] / "cuda" / "conftest.py")
_cuda_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cuda_conftest)
small_tiles = _cuda_conftest.small_tiles


def _gpt(pos="sinusoidal", seed=0, **kw):
    mt.manual_seed(seed)
    cfg = dict(vocab_size=13, block_size=32, n_layer=2, n_head=2, n_embd=16, norm_first=True, pos_encoding=pos)
    return GPT(GPTConfig(**{**cfg, **kw}))


def _s2s(pos="sinusoidal", seed=0, **kw):
    mt.manual_seed(seed)
    cfg = dict(vocab_size=12, d_model=16, nhead=2, num_layers=2, dim_feedforward=32, max_len=24, norm_first=True,
               pos_encoding=pos)
    return Seq2Seq(Seq2SeqConfig(**{**cfg, **kw}))


def _ids(shape, lo, hi, seed=0, pad_tail=0):
    a = np.random.default_rng(seed).integers(lo, hi, shape)
    if pad_tail:
        a[0, -pad_tail:] = 0
    return mt.tensor(a)


def _both_ways(gen, x, n, **kw):
    (a, la), (b, lb) = (gen(x, n, use_cache=c, return_logits=True, **kw) for c in (True, False))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert la.shape == lb.shape and la.shape[1] >= 1
    np.testing.assert_allclose(la, lb, atol=1e-5, rtol=0)
    return a, la


# ----------------------------------------------------------------------------- cache == no cache
@pytest.mark.parametrize("pos", ["sinusoidal", "rotary"])
def test_gpt_cached_equals_uncached_greedy_and_sampling(pos):
    lm, x = _gpt(pos), _ids((3, 5), 0, 13)
    out, _ = _both_ways(lm.generate, x, 20, temperature=0.0)
    assert out.shape == (3, 25) and out.dtype is mt.int64
    np.testing.assert_array_equal(out.numpy()[:, :5], x.numpy())
    # sampling draws the same numbers either way, so under one seed the samples agree too
    mt.manual_seed(11)
    a = lm.generate(x, 12, temperature=1.3, top_k=6)
    mt.manual_seed(11)
    b = lm.generate(x, 12, temperature=1.3, top_k=6, use_cache=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("pos", ["sinusoidal", "rotary"])
def test_seq2seq_cached_equals_uncached_greedy(pos):
    m = _s2s(pos)
    src = _ids((3, 7), 3, 12, pad_tail=2)
    out, _ = _both_ways(m.generate, src, 18)
    assert out.shape == (3, 19) and np.all(out.numpy()[:, 0] == 1)
    _both_ways(m.generate, src, 18, eos_token_id=EOS)


@pytest.mark.parametrize("family", ["gpt", "seq2seq"])
def test_cuda_cached_equals_uncached_and_cpu(family):
    """Numba's CUDA simulator here (a real GPU with NUMBA_ENABLE_CUDASIM=0): tiny models."""
    if family == "gpt":
        model, x = _gpt(n_layer=1, n_head=2, n_embd=8, seed=3), _ids((2, 2), 0, 13, seed=3)
    else:
        model, x = _s2s(num_layers=1, d_model=8, dim_feedforward=8, seed=3), _ids((2, 3), 3, 12, seed=3, pad_tail=1)
    kw = dict(temperature=0.0) if family == "gpt" else {}
    cpu_out, cpu_logits = model.generate(x, 2, return_logits=True, **kw)
    model.to("cuda")
    out, logits = _both_ways(model.generate, x.to("cuda"), 2, **kw)
    assert out.device.type == "cuda"
    np.testing.assert_array_equal(out.numpy(), cpu_out.numpy())
    np.testing.assert_allclose(logits, cpu_logits, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- beam search
def _score(m, src, ys, eos=None):
    """sum log p(y_t | y_<t, src) of each row of ys (BOS first), by one teacher-forced forward;
    tokens after the first EOS (padding) are not counted."""
    logits = m(src, mt.tensor(ys[:, :-1])).numpy().astype(np.float64)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    tok = np.take_along_axis(logp, ys[:, 1:, None], -1)[..., 0]
    if eos is not None:
        after = np.cumsum(ys[:, 1:] == eos, 1) - (ys[:, 1:] == eos) > 0
        tok = np.where(after, 0.0, tok)
    return tok.sum(1)


@pytest.mark.parametrize("lp", [0.0, 1.0])
def test_beam_size_1_is_greedy(lp):
    m = _s2s(seed=4)
    src = _ids((4, 6), 3, 12, seed=4, pad_tail=1)
    for eos in (None, EOS, 5, 7):
        g = m.generate(src, 12, eos_token_id=eos)
        b = m.generate(src, 12, beam_size=1, length_penalty=lp, eos_token_id=eos)
        np.testing.assert_array_equal(b.numpy(), g.numpy())


def test_beam_search_is_exact_when_the_beam_holds_every_prefix():
    """vocab 5, 3 steps, no EOS: a beam of 25 keeps all 5² prefixes, so it must return the best of
    all 125 continuations, found here by brute force."""
    m = _s2s(seed=5, vocab_size=5)
    src = _ids((2, 4), 1, 5, seed=5)
    best = m.generate(src, 3, beam_size=25, length_penalty=0.0).numpy()
    for b in range(2):
        allys = np.array([[1, *t] for t in itertools.product(range(5), repeat=3)])
        scores = _score(m, mt.tensor(np.repeat(src.numpy()[b:b + 1], len(allys), 0)), allys)
        np.testing.assert_array_equal(best[b], allys[scores.argmax()])


def test_beam_search_finds_a_higher_model_score_than_greedy():
    m = _s2s(seed=6)
    src = _ids((8, 6), 3, 12, seed=6)
    g = m.generate(src, 6, eos_token_id=EOS).numpy()
    b4 = m.generate(src, 6, beam_size=4, length_penalty=0.0, eos_token_id=EOS).numpy()
    b4u = m.generate(src, 6, beam_size=4, length_penalty=0.0, eos_token_id=EOS, use_cache=False).numpy()
    np.testing.assert_array_equal(b4, b4u)
    width = max(g.shape[1], b4.shape[1])
    g, b4 = (np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (g, b4))
    sg, sb = _score(m, src, g, EOS), _score(m, src, b4, EOS)
    assert np.any(sb > sg + 1e-3), (sg, sb)


# ----------------------------------------------------------------------------- sampling
def test_sampling_is_reproducible_under_manual_seed_and_varies_with_it():
    lm, x = _gpt(seed=7), _ids((2, 3), 0, 13, seed=7)
    runs = []
    for seed in (1, 1, 2, 3):
        mt.manual_seed(seed)
        runs.append(lm.generate(x, 10, temperature=1.0).numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert any(not np.array_equal(runs[0], r) for r in runs[2:])


def test_sampling_follows_softmax_of_logits_over_temperature():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    mt.manual_seed(0)
    draws = np.concatenate([next_tokens(np.repeat(logits, 4000, 0), 2.0, None, None) for _ in range(2)])
    p = np.array([0.5, 0.3, 0.15, 0.05]) ** 0.5
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / len(draws), p / p.sum(), atol=0.02)


def test_top_k_and_top_p_only_draw_from_the_allowed_tokens():
    logits = np.random.default_rng(8).standard_normal((500, 9)) * 2
    mt.manual_seed(1)
    k = next_tokens(logits, 1.0, 3, None)
    rank = (logits > np.take_along_axis(logits, k[:, None], 1)).sum(1)
    assert rank.max() == 2 and rank.min() == 0                 # top 3 only, and not just the argmax
    pr = np.exp(logits - logits.max(1, keepdims=True))
    pr /= pr.sum(1, keepdims=True)
    tp = next_tokens(logits, 1.0, None, 0.6)
    # a token is allowed when the mass of the tokens strictly more likely than it is below 0.6
    before = np.array([pr[i][pr[i] > pr[i, t]].sum() for i, t in enumerate(tp)])
    assert before.max() < 0.6 and np.any(before > 0)
    np.testing.assert_array_equal(next_tokens(logits, 1.0, 1, None), logits.argmax(1))
    np.testing.assert_array_equal(next_tokens(logits, 0.0, None, None), logits.argmax(1))


def test_eos_stops_rows_and_the_batch():
    lm, x = _gpt(seed=9), _ids((3, 4), 0, 13, seed=9)
    free = lm.generate(x, 10, temperature=0.0).numpy()
    eos = int(free[0, 6])                                       # what row 0 produces at its third step
    out = lm.generate(x, 10, temperature=0.0, eos_token_id=eos).numpy()
    for row, ref in zip(out, free):
        hit = np.flatnonzero(ref[4:] == eos)
        stop = 4 + (hit[0] + 1 if len(hit) else 10)
        np.testing.assert_array_equal(row[:stop], ref[:stop])  # the same tokens up to its EOS ...
        assert np.all(row[stop:] == eos)                        # ... then EOS as filler
    assert out.shape[1] == 4 + max(int(np.flatnonzero(r[4:] == eos)[0]) + 1 if np.any(r[4:] == eos) else 10
                                   for r in free)


# ----------------------------------------------------------------------------- errors
def test_bad_requests_get_clear_errors():
    lm, m = _gpt(), _s2s()
    x, src = _ids((2, 3), 0, 13), _ids((2, 4), 3, 12)
    cases = [
        (lambda: lm.generate(mt.tensor([[1, 13]]), 2), r"\[0, 13\).*got 13 at row 0, position 1"),
        (lambda: lm.generate(mt.tensor([[-1, 2]]), 2), "got -1"),
        (lambda: lm.generate(mt.zeros(2, 0, dtype=mt.int64), 2), "empty prompt"),
        (lambda: lm.generate(mt.zeros(2, 3), 2), "integer dtype"),
        (lambda: lm.generate(x, 30), "block_size=32"),
        (lambda: lm.generate(x, 2, temperature=-1.0), "temperature"),
        (lambda: lm.generate(x, 2, top_p=0.0), "top_p"),
        (lambda: lm.generate(x, 2, top_k=0), "top_k"),
        (lambda: lm.generate(x, 2, eos_token_id=99), "eos_token_id"),
        (lambda: m.generate(src, 3, beam_size=0), "beam_size must be a positive int, got 0"),
        (lambda: m.generate(mt.tensor([[3, 12]]), 3), r"source ids must lie in \[0, 12\)"),
        (lambda: m.generate(src, 3, beam_size=2, temperature=1.0), "beam search is deterministic"),
        (lambda: m.generate(src, 40), "max_len=24"),
        (lambda: m.generate(mt.zeros(1, 0, dtype=mt.int64), 3), "empty source"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()


def test_a_cache_from_another_model_is_refused():
    a, b = _gpt(seed=1), _gpt(seed=2)
    x = _ids((2, 3), 0, 13)
    _, cache = a(x, use_cache=True)
    with pytest.raises(ValueError, match="cache from another model"):
        b(x[:, :1], past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="batch of 2"):
        a(x[:1, :1], past_key_values=cache, use_cache=True)
    m, n = _s2s(seed=1), _s2s(seed=2)
    src = _ids((2, 4), 3, 12)
    mem, pad = m.encode(src)
    _, c2 = m.decode(mt.tensor([[1], [1]]), mem, pad, use_cache=True)
    with pytest.raises(ValueError, match="cache from another model"):
        n.decode(mt.tensor([[4], [4]]), mem, pad, c2, True)


def test_rotary_models_have_no_length_table():
    """Sinusoidal Seq2Seq refuses targets past max_len; rotary ones decode past it."""
    m = _s2s("rotary", max_len=8)
    out = m.generate(_ids((1, 12), 3, 12), 15)
    assert out.shape == (1, 16)
