"""nn.Transformer against PyTorch's with the same weights: defaults, outputs and gradients."""
import numpy as np
import pytest

import minitrans as mt
from minitrans import nn

from torchref import compare_grads, copy_weights, pair

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor")


def test_defaults_match_pytorch():
    import inspect

    for name in ("Transformer", "TransformerEncoderLayer", "TransformerDecoderLayer"):
        ours = inspect.signature(getattr(nn, name)).parameters
        theirs = inspect.signature(getattr(torch.nn, name)).parameters
        for arg in ("norm_first", "batch_first", "dropout", "layer_norm_eps", "dim_feedforward", "bias"):
            assert ours[arg].default == theirs[arg].default, (name, arg)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_matches_pytorch(norm_first, batch_first):
    kw = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=12, dropout=0.0,
              batch_first=batch_first, norm_first=norm_first)
    torch.manual_seed(0)
    ref = torch.nn.Transformer(**kw).double()
    model = nn.Transformer(**kw).double()
    copy_weights(ref, model)
    rng = np.random.default_rng(1)
    B, S, T = 2, 5, 3
    src_shape, tgt_shape = ((B, S, 8), (B, T, 8)) if batch_first else ((S, B, 8), (T, B, 8))
    src_t, src_m = pair(rng, src_shape, torch)
    tgt_t, tgt_m = pair(rng, tgt_shape, torch)
    pad = np.zeros((B, S), bool)
    pad[1, -2:] = True                                   # the second sequence is two tokens shorter
    mask = np.triu(np.full((T, T), -np.inf), 1)
    out_t = ref(src_t, tgt_t, tgt_mask=torch.tensor(mask), src_key_padding_mask=torch.tensor(pad),
                memory_key_padding_mask=torch.tensor(pad))
    out_m = model(src_m, tgt_m, tgt_mask=mt.tensor(mask), src_key_padding_mask=mt.tensor(pad),
                  memory_key_padding_mask=mt.tensor(pad))
    np.testing.assert_allclose(out_m.numpy(), out_t.detach().numpy(), atol=1e-5, rtol=1e-5)
    w = rng.standard_normal(out_m.shape)
    (out_t * torch.tensor(w)).sum().backward()
    (out_m * mt.tensor(w)).sum().backward()
    np.testing.assert_allclose(src_m.grad.numpy(), src_t.grad.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(tgt_m.grad.numpy(), tgt_t.grad.numpy(), atol=1e-5, rtol=1e-5)
    compare_grads(ref, model)


def test_post_ln_differs_from_pre_ln_with_the_same_weights():
    # the silent failure this guards against: same weights, different normalisation placement
    kw = dict(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=12, dropout=0.0,
              batch_first=True)
    torch.manual_seed(0)
    ref = torch.nn.Transformer(**kw).double()
    post, pre = nn.Transformer(**kw).double(), nn.Transformer(norm_first=True, **kw).double()
    copy_weights(ref, post)
    copy_weights(ref, pre)
    src, tgt = np.random.default_rng(2).standard_normal((2, 1, 4, 8))
    want = ref(torch.tensor(src), torch.tensor(tgt)).detach().numpy()
    np.testing.assert_allclose(post(mt.tensor(src), mt.tensor(tgt)).numpy(), want, atol=1e-6)
    assert np.abs(pre(mt.tensor(src), mt.tensor(tgt)).numpy() - want).max() > 1e-2
