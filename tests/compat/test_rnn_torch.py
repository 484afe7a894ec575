"""nn.RNN / LSTM / GRU and their cells against PyTorch with copied weights: outputs, final
states and every gradient to 1e-5; a float64 gradcheck of each cell."""
import numpy as np
import pytest

import minitrans as mt
from minitrans import nn

from torchref import compare_grads, copy_weights

torch = pytest.importorskip("torch")

CONFIGS = [  # (class, kwargs, give initial state)
    ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True), True),
    ("LSTM", dict(num_layers=1, batch_first=False), False),
    ("LSTM", dict(num_layers=2, bias=False), True),
    ("GRU", dict(num_layers=2, bidirectional=True, batch_first=True), True),
    ("GRU", dict(), False),
    ("RNN", dict(num_layers=2, nonlinearity="relu", bidirectional=True), True),
    ("RNN", dict(batch_first=True), False),
]


def _state(rng, shape, n):
    arrs = [rng.standard_normal(shape) * 0.5 for _ in range(n)]
    return ([torch.tensor(a, requires_grad=True) for a in arrs], [mt.tensor(a, requires_grad=True) for a in arrs])


@pytest.mark.parametrize("cls,kw,with_state", CONFIGS)
@pytest.mark.parametrize("unbatched", [False, True])
def test_matches_pytorch(cls, kw, with_state, unbatched):
    torch.manual_seed(0)
    I, H, L, N = 3, 4, 5, 2
    ref = getattr(torch.nn, cls)(I, H, **kw).double()
    model = getattr(nn, cls)(I, H, **kw).double()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in ref.named_parameters()]
    copy_weights(ref, model)
    rng = np.random.default_rng(1)
    shape = (L, I) if unbatched else ((N, L, I) if kw.get("batch_first") else (L, N, I))
    x = rng.standard_normal(shape)
    xt, xm = torch.tensor(x, requires_grad=True), mt.tensor(x, requires_grad=True)
    D = 2 if kw.get("bidirectional") else 1
    hshape = (kw.get("num_layers", 1) * D,) + (() if unbatched else (N,)) + (H,)
    n_states = 2 if cls == "LSTM" else 1
    st, sm = _state(rng, hshape, n_states) if with_state else (None, None)
    hx_t = None if st is None else (tuple(st) if cls == "LSTM" else st[0])
    hx_m = None if sm is None else (tuple(sm) if cls == "LSTM" else sm[0])
    out_t, hn_t = ref(xt, hx_t)
    out_m, hn_m = model(xm, hx_m)
    finals_t = list(hn_t) if cls == "LSTM" else [hn_t]
    finals_m = list(hn_m) if cls == "LSTM" else [hn_m]
    np.testing.assert_allclose(out_m.numpy(), out_t.detach().numpy(), atol=1e-5, rtol=1e-5)
    for a, b in zip(finals_m, finals_t):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), atol=1e-5, rtol=1e-5)
    w = rng.standard_normal(out_m.shape)
    ws = [rng.standard_normal(f.shape) for f in finals_m]
    loss_t = (out_t * torch.tensor(w)).sum() + sum((f * torch.tensor(v)).sum() for f, v in zip(finals_t, ws))
    loss_m = (out_m * mt.tensor(w)).sum() + sum((f * mt.tensor(v)).sum() for f, v in zip(finals_m, ws))
    loss_t.backward()
    loss_m.backward()
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), atol=1e-5, rtol=1e-5)
    if with_state:
        for a, b in zip(sm, st):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=1e-5, rtol=1e-5)
    compare_grads(ref, model)


def test_state_dict_loads_across_in_float32():
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    model = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    model.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(model(mt.tensor(x))[0].numpy(), ref(torch.tensor(x))[0].detach().numpy(), atol=1e-5)


def test_dropout_between_layers_only_while_training():
    mt.manual_seed(0)
    model = nn.LSTM(3, 8, num_layers=2, dropout=0.5).double()
    x = mt.tensor(np.random.default_rng(0).standard_normal((4, 2, 3)))
    a, b = model(x)[0].numpy(), model(x)[0].numpy()
    assert np.abs(a - b).max() > 1e-6                          # training: the masks differ
    model.eval()
    np.testing.assert_array_equal(model(x)[0].numpy(), model(x)[0].numpy())


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_match_pytorch_and_gradcheck(cls):
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls)(3, 4).double()
    cell = getattr(nn, cls)(3, 4).double()
    copy_weights(ref, cell)
    rng = np.random.default_rng(2)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    hx_t = (torch.tensor(h), torch.tensor(c)) if cls == "LSTMCell" else torch.tensor(h)
    hx_m = (mt.tensor(h), mt.tensor(c)) if cls == "LSTMCell" else mt.tensor(h)
    out_t, out_m = ref(torch.tensor(x), hx_t), cell(mt.tensor(x), hx_m)
    for a, b in zip(out_m if cls == "LSTMCell" else [out_m], out_t if cls == "LSTMCell" else [out_t]):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), atol=1e-10)

    def f(xx, hh, cc):
        out = cell(xx, (hh, cc) if cls == "LSTMCell" else hh)
        return out[0] * out[1] if cls == "LSTMCell" else out

    leaves = [mt.tensor(a, requires_grad=True) for a in (x, h, c)]
    assert mt.autograd.gradcheck(f, leaves)


def test_bad_input_errors():
    lstm = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"input_size=3"):
        lstm(mt.zeros(5, 2, 4))
    with pytest.raises(ValueError, match=r"h0 of shape \(2, 2, 4\)"):
        lstm(mt.zeros(5, 2, 3), (mt.zeros(1, 2, 4), mt.zeros(2, 2, 4)))
    with pytest.raises(TypeError, match=r"tuple \(h0, c0\)"):
        lstm(mt.zeros(5, 2, 3), mt.zeros(2, 2, 4))
    with pytest.raises(RuntimeError, match="dtype"):
        lstm(mt.zeros(5, 2, 3, dtype=mt.float64))
    with pytest.raises(ValueError, match="dropout"):
        nn.GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="gelu")


def test_fused_lstm_cell_equals_the_composed_ops():
    from minitrans.nn import rnn

    rng = np.random.default_rng(3)
    gates, c = rng.standard_normal((3, 8)), rng.standard_normal((3, 2))
    leaves = [mt.tensor(gates, requires_grad=True), mt.tensor(c, requires_grad=True)]
    from minitrans.ops.select import LSTMPointwise

    assert mt.autograd.gradcheck(lambda g, cc: LSTMPointwise.apply(g, cc), leaves)
    lstm = nn.LSTM(3, 4, num_layers=2).double()
    x = mt.tensor(rng.standard_normal((5, 2, 3)), requires_grad=True)
    outs = []
    for fused in (True, False):
        rnn.FUSED_LSTM["on"] = fused
        try:
            y, (h, cn) = lstm(x)
            (y.sum() + (cn * cn).sum()).backward()
        finally:
            rnn.FUSED_LSTM["on"] = True
        outs.append((y.numpy(), cn.numpy(), x.grad.numpy().copy(), lstm.weight_hh_l0.grad.numpy().copy()))
        x.grad, lstm.weight_hh_l0.grad = None, None
        lstm.zero_grad()
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_lstm_runs_on_cuda():
    """Two time steps, width 2: each op is one simulated launch, so the shapes stay tiny."""
    if not mt.cuda.is_available():
        pytest.skip("no CUDA device or simulator")
    mt.manual_seed(0)
    lstm = nn.LSTM(2, 2, batch_first=True)
    x = np.random.default_rng(4).standard_normal((1, 2, 2)).astype(np.float32)
    want = lstm(mt.tensor(x))[0].numpy()
    lstm.to("cuda")
    got = lstm(mt.tensor(x, device="cuda"))[0]
    got.sum().backward()
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-6)
    assert lstm.weight_ih_l0.grad is not None
