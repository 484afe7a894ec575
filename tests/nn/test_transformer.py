"""MultiheadAttention against a NumPy multi-head computation, gradcheck of a whole tiny
encoder–decoder, Xavier init, and the Module API (parameters, modes, state dicts, repr)."""
import math
import re

import numpy as np
import pytest

import minitrans as mt
import minitrans.nn as nn
from helpers import rand


def _np_softmax_masked(s):
    """Row softmax where -inf entries are masked; a row with nothing left gives zeros."""
    keep = np.isfinite(s)
    m = np.where(keep, s, -np.inf).max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(np.where(keep, s, 0.0) - m), 0.0)
    z = e.sum(-1, keepdims=True)
    return np.divide(e, z, out=np.zeros_like(e), where=z > 0)


def np_mha(mha, q, k, v, key_padding_mask=None, attn_mask=None, batch_first=True):
    """PyTorch MHA from its parameters: bool masks mark positions NOT allowed; float masks are added."""
    if not batch_first:
        q, k, v = (np.swapaxes(a, 0, 1) for a in (q, k, v))
    E, H = mha.embed_dim, mha.num_heads
    hd = E // H
    W, b = mha.in_proj_weight.numpy(), mha.in_proj_bias.numpy()
    Wo, bo = mha.out_proj.weight.numpy(), mha.out_proj.bias.numpy()
    B, Tq, _ = q.shape
    Tk = k.shape[1]

    def heads(x, i):                                   # (B, T, E) -> (B, H, T, hd)
        y = x @ W[i * E:(i + 1) * E].T + b[i * E:(i + 1) * E]
        return y.reshape(B, -1, H, hd).transpose(0, 2, 1, 3)

    Q, K, V = heads(q, 0), heads(k, 1), heads(v, 2)
    s = Q @ K.transpose(0, 1, 3, 2) / math.sqrt(hd)   # (B, H, Tq, Tk)
    if attn_mask is not None:
        m = attn_mask.reshape(-1, H, Tq, Tk) if attn_mask.ndim == 3 else attn_mask
        s = np.where(m, -np.inf, s) if m.dtype == bool else s + m
    if key_padding_mask is not None:
        s = np.where(key_padding_mask[:, None, None, :], -np.inf, s)
    P = _np_softmax_masked(s)
    out = (P @ V).transpose(0, 2, 1, 3).reshape(B, Tq, E) @ Wo.T + bo
    if not batch_first:
        out = np.swapaxes(out, 0, 1)
    return out, P.mean(axis=1)


def _mha(E=4, H=2, batch_first=True, seed=0):
    mt.manual_seed(seed)
    m = nn.MultiheadAttention(E, H, batch_first=batch_first).double()
    with mt.no_grad():   # non-zero biases so that a bias mix-up shows
        m.in_proj_bias._data = rand(np.random.default_rng(seed), (3 * E,), -0.5, 0.5)
        m.out_proj.bias._data = rand(np.random.default_rng(seed + 1), (E,), -0.5, 0.5)
    return m


# ----------------------------------------------------------------------------- MultiheadAttention
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", ["none", "key_padding", "bool", "float", "both", "per_head"])
def test_mha_against_numpy_and_gradcheck(batch_first, masks):
    rng = np.random.default_rng(1)
    B, Tq, Tk, E, H = 2, 3, 4, 4, 2
    m = _mha(E, H, batch_first)
    shape = (lambda T: (B, T, E)) if batch_first else (lambda T: (T, B, E))
    q, k, v = rand(rng, shape(Tq)), rand(rng, shape(Tk)), rand(rng, shape(Tk))
    kpm = am = None
    if masks in ("key_padding", "both"):
        kpm = np.zeros((B, Tk), bool)
        kpm[1, -2:] = True                                   # batch 1: last two keys are padding
    if masks in ("bool", "both"):
        am = np.zeros((Tq, Tk), bool)
        am[0, 1] = am[2, 0] = True
    if masks == "float":
        am = rand(rng, (Tq, Tk), -1.0, 1.0)
    if masks == "per_head":
        am = rand(rng, (B * H, Tq, Tk), -1.0, 1.0)
    kw = dict(key_padding_mask=None if kpm is None else mt.tensor(kpm),
              attn_mask=None if am is None else mt.tensor(am))
    ts = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
    out, w = m(*ts, **kw)
    want_out, want_w = np_mha(m, q, k, v, kpm, am, batch_first)
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.numpy(), want_w, rtol=1e-10, atol=1e-12)
    assert w.shape == (B, Tq, Tk)
    np.testing.assert_allclose(w.numpy().sum(-1), 1.0, rtol=1e-12)   # averaged weights sum to 1 over keys
    # the fused path (need_weights=False) gives the same output
    out2, none = m(*ts, need_weights=False, **kw)
    assert none is None
    np.testing.assert_allclose(out2.numpy(), want_out, rtol=1e-10, atol=1e-12)
    for need in (True, False):
        assert mt.autograd.gradcheck(lambda a, b, c: m(a, b, c, need_weights=need, **kw)[0], ts)


def test_mha_self_attention_and_per_head_weights():
    rng = np.random.default_rng(2)
    m = _mha(6, 3)
    x = mt.tensor(rand(rng, (2, 5, 6)), requires_grad=True)
    out, w = m(x, x, x, average_attn_weights=False)
    want, _ = np_mha(m, x.numpy(), x.numpy(), x.numpy())
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-10, atol=1e-12)
    assert w.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(w.numpy().sum(-1), 1.0, rtol=1e-12)
    assert mt.autograd.gradcheck(lambda x: m(x, x, x)[0], [x])
    # gradient w.r.t. the parameters (parameters are tensors too: gradcheck perturbs them in place)
    params = [m.in_proj_weight, m.in_proj_bias, m.out_proj.weight, m.out_proj.bias]
    assert mt.autograd.gradcheck(lambda *ps: m(x, x, x, need_weights=False)[0], params)


@pytest.mark.parametrize("shape", [(3, 3), (4, 3, 3)])
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_learnable_float_attn_mask_gets_gradient(shape, need_weights):
    rng = np.random.default_rng(5)
    m = _mha(4, 2)
    x = mt.tensor(rand(rng, (2, 3, 4)))
    am = mt.tensor(rand(rng, shape, -1.0, 1.0), requires_grad=True)
    kpm = mt.tensor(np.array([[False, False, True], [False, False, False]]))
    out = m(x, x, x, attn_mask=am, key_padding_mask=kpm, need_weights=need_weights)[0]
    np.testing.assert_allclose(out.numpy(), np_mha(m, *(x.numpy(),) * 3, kpm.numpy(), am.numpy())[0],
                               rtol=1e-10, atol=1e-12)
    out.sum().backward()
    assert am.grad is not None and am.grad.shape == shape and np.abs(am.grad.numpy()).max() > 0
    assert mt.autograd.gradcheck(
        lambda a: m(x, x, x, attn_mask=a, key_padding_mask=kpm, need_weights=need_weights)[0], [am])


def test_mha_is_causal_equals_explicit_causal_mask():
    m = _mha(4, 2)
    x = mt.tensor(rand(np.random.default_rng(6), (2, 3, 4)))
    float_mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=mt.float64)
    np.testing.assert_array_equal(float_mask.numpy(), np.triu(np.full((3, 3), -np.inf), 1))
    bool_mask = mt.tensor(np.triu(np.ones((3, 3), bool), 1))        # True = not allowed
    want = m(x, x, x, attn_mask=float_mask)[0].numpy()
    for kw in (dict(is_causal=True), dict(is_causal=True, need_weights=False), dict(attn_mask=bool_mask)):
        np.testing.assert_allclose(m(x, x, x, **kw)[0].numpy(), want, rtol=1e-12, atol=1e-14, err_msg=str(kw))


def test_mha_bad_input():
    m = _mha(4, 2)
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(5, 2)
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        x = mt.zeros(2, 3, 5, dtype=mt.float64)
        m(x, x, x)
    x = mt.zeros(2, 3, 4, dtype=mt.float64)
    with pytest.raises(ValueError, match=r"key_padding_mask.*\(2, 3\).*\(2, 4\)"):
        m(x, x, x, key_padding_mask=mt.zeros(2, 4, dtype=mt.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        m(x, x, x, attn_mask=mt.zeros(2, 2, dtype=mt.bool))


# ----------------------------------------------------------------------------- the whole Transformer
def _tiny(norm_first=True, seed=0):
    mt.manual_seed(seed)
    return nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16,
                          dropout=0.0, batch_first=True, norm_first=norm_first).double()


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_gradcheck_inputs(norm_first):
    model = _tiny(norm_first)
    assert model.encoder.layers[0].norm_first is norm_first
    rng = np.random.default_rng(3)
    src = mt.tensor(rand(rng, (2, 3, 8)), requires_grad=True)
    tgt = mt.tensor(rand(rng, (2, 2, 8)), requires_grad=True)
    causal = nn.Transformer.generate_square_subsequent_mask(2, dtype=mt.float64)
    out = model(src, tgt, tgt_mask=causal)
    assert out.shape == (2, 2, 8) and out.dtype is mt.float64
    assert mt.autograd.gradcheck(lambda s, t: model(s, t, tgt_mask=causal), [src, tgt])
    # causality: the first target position does not depend on the second
    tgt2 = tgt.numpy().copy()
    tgt2[:, 1] += rng.standard_normal((2, 8))   # not a constant shift: LayerNorm would remove that
    out2 = model(src, mt.tensor(tgt2), tgt_mask=causal)
    np.testing.assert_allclose(out2.numpy()[:, 0], out.numpy()[:, 0], rtol=1e-12, atol=1e-14)
    assert np.abs(out2.numpy()[:, 1] - out.numpy()[:, 1]).max() > 1e-6


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_gradcheck_parameters_fast(norm_first):
    model = _tiny(norm_first, seed=1)
    rng = np.random.default_rng(4)
    src, tgt = mt.tensor(rand(rng, (2, 3, 8))), mt.tensor(rand(rng, (2, 2, 8)))
    kpm = mt.tensor(np.array([[False, False, True], [False, False, False]]))
    names = ["encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.0.linear1.bias",
             "decoder.layers.0.multihead_attn.in_proj_weight", "decoder.layers.0.norm3.weight",
             "decoder.norm.bias"]
    params = dict(model.named_parameters())
    ps = [params[n] for n in names]
    fn = lambda *_: model(src, tgt, src_key_padding_mask=kpm, memory_key_padding_mask=kpm, tgt_is_causal=True)
    for seed in range(3):
        assert mt.autograd.gradcheck(fn, ps, fast_mode=True, seed=seed)
    # every parameter receives a gradient
    (fn() ** 2).sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and np.isfinite(p.grad.numpy()).all(), n


def test_post_ln_is_default_as_in_pytorch_and_differs_from_pre_ln():
    a, b = _tiny(True, seed=2), _tiny(False, seed=2)
    assert nn.TransformerEncoderLayer(8, 2).norm_first is False
    assert nn.TransformerDecoderLayer(8, 2).norm_first is False
    assert nn.Transformer(8, 2, 1, 1, 16).encoder.layers[0].norm_first is False
    src = mt.tensor(rand(np.random.default_rng(0), (1, 3, 8)))
    tgt = mt.tensor(rand(np.random.default_rng(1), (1, 2, 8)))
    assert np.abs(a(src, tgt).numpy() - b(src, tgt).numpy()).max() > 1e-3


def test_stacked_layers_are_independent_copies():
    layer = nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2)
    a, b = enc.layers[0].linear1.weight, enc.layers[1].linear1.weight
    assert a is not b and isinstance(a, nn.Parameter) and a.requires_grad
    before = b.numpy().copy()
    a._data += 1.0                                      # an in-place optimizer update of layer 0 ...
    np.testing.assert_array_equal(b.numpy(), before)   # ... leaves layer 1 alone
    assert len(list(enc.parameters())) == 2 * len(list(layer.parameters()))


def test_transformer_xavier_init():
    mt.manual_seed(0)
    model = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32)
    n = 0
    for name, p in model.named_parameters():
        if p.ndim > 1:
            fan_out, fan_in = p.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            a = np.abs(p.numpy())
            assert a.max() <= bound, name
            assert a.max() > 0.8 * bound, f"{name}: max {a.max()} far below the Xavier bound {bound}"
            assert abs(p.numpy().std() - bound / math.sqrt(3)) < 0.25 * bound / math.sqrt(3), name
            n += 1
    assert n == 10   # enc: in_proj, out_proj, linear1, linear2; dec: 2 × (in_proj, out_proj), linear1, linear2


def test_transformer_rejects_mismatched_inputs():
    model = _tiny()
    with pytest.raises(ValueError, match="batch"):
        model(mt.zeros(2, 3, 8, dtype=mt.float64), mt.zeros(3, 2, 8, dtype=mt.float64))
    with pytest.raises(ValueError, match="d_model=8"):
        model(mt.zeros(2, 3, 4, dtype=mt.float64), mt.zeros(2, 2, 4, dtype=mt.float64))


# ----------------------------------------------------------------------------- Module API
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.block = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Dropout(0.5))
        self.scale = nn.Parameter(mt.ones(4))
        self.register_buffer("running", mt.zeros(4))
        self.register_buffer("cache", mt.zeros(2), persistent=False)

    def forward(self, x):
        return self.block(self.fc(x)) * self.scale


def test_parameters_children_and_modes():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "fc.weight", "fc.bias", "block.0.weight", "block.0.bias"]
    assert len(list(net.parameters())) == 5
    assert [type(c).__name__ for c in net.children()] == ["Linear", "Sequential"]
    assert [n for n, _ in net.named_modules()] == ["", "fc", "block", "block.0", "block.1", "block.2"]
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    x = mt.ones(2, 3)
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())   # dropout off in eval
    net.train()
    assert all(m.training for m in net.modules())
    net.block.train(False)
    assert net.training and not net.block[2].training


def test_state_dict_keys_match_pytorch_names():
    net = Net()
    assert list(net.state_dict()) == ["scale", "running", "fc.weight", "fc.bias", "block.0.weight",
                                      "block.0.bias"]
    keys = set(_tiny().state_dict())
    for k in ["encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.0.self_attn.in_proj_bias",
              "encoder.layers.0.self_attn.out_proj.weight", "encoder.layers.0.linear1.weight",
              "encoder.layers.0.norm1.weight", "encoder.layers.0.norm2.bias", "encoder.norm.weight",
              "decoder.layers.0.self_attn.in_proj_weight", "decoder.layers.0.multihead_attn.out_proj.bias",
              "decoder.layers.0.norm3.weight", "decoder.layers.0.linear2.bias", "decoder.norm.bias"]:
        assert k in keys, k
    assert len(keys) == 12 + 18 + 4   # encoder layer 12, decoder layer 18, two final norms


def test_load_state_dict_roundtrip():
    a, b = _tiny(seed=0), _tiny(seed=1)
    res = b.load_state_dict(a.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    # values are copied, not shared
    a.encoder.norm.weight._data += 1
    assert not np.array_equal(a.encoder.norm.weight.numpy(), b.encoder.norm.weight.numpy())


def _snapshot(m):
    return {k: v.numpy().copy() for k, v in m.state_dict().items()}


def test_load_state_dict_strict_errors_leave_parameters_unchanged():
    net = Net()
    before = _snapshot(net)
    sd = {k: mt.tensor(np.full(v.shape, 7.0, np.float32)) for k, v in net.state_dict().items()}
    del sd["fc.bias"]
    sd["fc.extra"] = mt.zeros(1)
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    assert "Missing" in msg and "'fc.bias'" in msg and "Unexpected" in msg and "'fc.extra'" in msg
    for k, v in _snapshot(net).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)

    sd = {k: mt.tensor(np.full(v.shape, 7.0, np.float32)) for k, v in net.state_dict().items()}
    sd["block.0.weight"] = mt.zeros(4, 5)
    with pytest.raises(RuntimeError, match=r"block\.0\.weight.*\(4, 5\).*\(4, 4\)"):
        net.load_state_dict(sd)
    with pytest.raises(RuntimeError, match=r"block\.0\.weight"):
        net.load_state_dict(sd, strict=False)                  # a shape mismatch is an error either way
    for k, v in _snapshot(net).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_load_state_dict_non_strict_returns_key_lists():
    net = Net()
    sd = {k: mt.tensor(np.full(v.shape, 7.0, np.float32)) for k, v in net.state_dict().items()}
    del sd["scale"]
    sd["nope"] = mt.zeros(3)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == ["scale"] and unexpected == ["nope"]
    assert np.all(net.fc.weight.numpy() == 7.0) and np.all(net.running.numpy() == 7.0)
    assert np.all(net.scale.numpy() == 1.0)


def test_repr():
    text = repr(Net())
    assert text.startswith("Net(\n")
    assert "(fc): Linear(in_features=3, out_features=4, bias=True)" in text
    assert re.search(r"\(block\): Sequential\(\n\s+\(0\): Linear\(in_features=4, out_features=4, bias=True\)\n"
                     r"\s+\(1\): ReLU\(\)\n\s+\(2\): Dropout\(p=0.5\)\n\s+\)", text), text
    assert repr(nn.MultiheadAttention(4, 2)).startswith("MultiheadAttention(\n  embed_dim=4, num_heads=2")
    assert repr(nn.LayerNorm(8)) == "LayerNorm((8,), eps=1e-05)"
    assert repr(nn.Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"


def test_double_and_zero_grad():
    net = Net()
    assert net.fc.weight.dtype is mt.float32
    w = net.fc.weight
    net.double()
    assert net.fc.weight is w and w.dtype is mt.float64 and net.running.dtype is mt.float64
    net(mt.ones(2, 3, dtype=mt.float64)).sum().backward()
    assert w.grad is not None
    net.zero_grad()
    assert w.grad is None
