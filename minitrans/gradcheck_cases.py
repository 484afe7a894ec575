"""The gradient-check catalogue: one ``Case`` per op and per ``nn`` layer, on several input layouts.

``python -m minitrans.gradcheck_report`` runs them. A new differentiable op (a ``Function``
subclass) or a new layer in ``minitrans.nn`` needs a case here, or an entry in ``EXCLUDED``
with the reason; ``tests/gradexp/test_gradcheck_report.py`` fails until it has one.
Each case lists the ``Function`` classes it ``covers``, and the report checks that the case
really calls them.
"""
from __future__ import annotations

from dataclasses import dataclass

import minitrans as mt
import minitrans.nn.functional as F
from minitrans.gradcheck_inputs import In, layout
from minitrans.ops import attention as attention_ops, elementwise as elementwise_ops, linalg as linalg_ops
from minitrans.ops import nn as nn_ops, reduce as reduce_ops, select as select_ops, shape as shape_ops
from minitrans.ops import unary as unary_ops
from minitrans.ops.hook_point import HookPoint
from minitrans.tensor import Tensor


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    """``call(*inputs)`` for an op; for a layer ``make(**config)`` builds it and ``call(module, *inputs)`` runs it."""

    name: str
    call: object
    variants: list
    covers: tuple = ()           # the Function classes this case must reach
    make: object = None          # layers only
    eps: float = 1e-6
    seed_each_call: bool = False     # dropout: the same mask in every forward of the check
    devices: tuple = ("cpu", "cuda")     # ops without a CUDA kernel say so here


def _ops():
    n34, b4, nc34 = In((3, 4)), In((4,)), In((3, 4), nc=True)

    def binary(kind_a="n", kind_b="n"):
        return [layout(In((3, 4), kind_a), In((3, 4), kind_b)), layout(In((3, 4), kind_a), In((4,), kind_b)),
                layout(In((2, 1, 3), kind_a), In((4, 1), kind_b)),
                layout(In((3, 4), kind_a, nc=True), In((3, 4), kind_b)),
                layout(In((1,), kind_a), In((1,), kind_b))]

    def unary(kind="n"):
        return [layout(In((3, 4), kind)), layout(In((2, 3, 5), kind, nc=True)), layout(In((1,), kind)),
                layout(In((5,), kind, nc=True))]

    def hooked(a, b):
        class Pair(mt.nn.Module):
            def forward(self, x, y):
                return x * y, x + y

        m = Pair()
        m.register_full_backward_hook(lambda mod, gi, go: None)
        o1, o2 = m(a, b)
        return o1 * o2

    attn = [layout(In((2, 3, 4)), In((2, 3, 4)), In((2, 3, 4))),
            layout(In((2, 3, 4)), In((2, 5, 4)), In((2, 5, 4))),
            layout(In((1, 1, 1)), In((1, 1, 1)), In((1, 1, 1))),
            layout(In((2, 2, 3, 4), nc=True), In((2, 1, 3, 4)), In((2, 2, 3, 4)))]
    return [
        Case("Add", lambda a, b: a + b, binary(), (elementwise_ops.Add,)),
        Case("Sub", lambda a, b: a - b, binary(), (elementwise_ops.Sub,)),
        Case("Mul", lambda a, b: a * b, binary(), (elementwise_ops.Mul,)),
        Case("Div", lambda a, b: a / b, binary("n", "pos"), (elementwise_ops.Div,)),
        Case("Neg", lambda a: -a, unary(), (elementwise_ops.Neg,)),
        Case("Pow", lambda a, b: a ** b, binary("pos", "n"), (elementwise_ops.Pow,)),
        Case("PowScalar", lambda a: a ** 3 + a ** 0.5 + a.rsqrt(), unary("pos"), (elementwise_ops.PowScalar,)),
        Case("RPowScalar", lambda a: 2.0 ** a, unary(), (elementwise_ops.RPowScalar,)),
        Case("Exp", lambda a: a.exp(), unary(), (elementwise_ops.Exp,)),
        Case("Log", lambda a: a.log(), unary("pos"), (elementwise_ops.Log,)),
        Case("Sqrt", lambda a: a.sqrt(), unary("pos"), (elementwise_ops.Sqrt,)),
        Case("Abs", lambda a: a.abs(), unary("grid"), (elementwise_ops.Abs,)),
        Case("Tanh", lambda a: a.tanh(), unary(), (elementwise_ops.Tanh,)),
        Case("Sigmoid", lambda a: a.sigmoid(), unary(), (elementwise_ops.Sigmoid,)),
        Case("Relu", lambda a: a.relu(), unary("grid"), (elementwise_ops.Relu,)),
        Case("Gelu", lambda a: a.gelu(), unary(), (elementwise_ops.Gelu,)),
        Case("Maximum", lambda a, b: mt.maximum(a, b), binary("grid", "grid2"), (elementwise_ops.Maximum,)),
        Case("Minimum", lambda a, b: mt.minimum(a, b), binary("grid", "grid2"), (elementwise_ops.Minimum,)),
        Case("Where", lambda m, a, b: mt.where(m, a, b),
             [layout(In((3, 4), "mask"), n34, n34), layout(In((3, 4), "mask"), n34, b4),
              layout(In((4,), "mask"), nc34, n34)],
             (elementwise_ops.Where,)),
        Case("Clamp", lambda a: a.clamp(-0.5, 0.5) + a.clamp(min=0.2), unary("grid"), (elementwise_ops.Clamp,)),
        # float64 -> float32 -> float64 is linear: a large step is exact, a small one drowns in float32 rounding
        Case("Cast", lambda a: a.float().double(), [layout(In((3, 4), "grid")), layout(In((2, 3), "grid", nc=True))],
             (elementwise_ops.Cast,), eps=1e-2),
        Case("Matmul", lambda a, b: a @ b,
             [layout(In((3, 4)), In((4, 2))), layout(In((2, 3, 4)), In((4, 5))), layout(In((4,)), In((4, 3))),
              layout(In((3, 4)), In((4,))), layout(In((3, 4), nc=True), In((2, 4, 2))), layout(In((1, 1)), In((1, 1)))],
             (linalg_ops.Matmul,)),
        Case("Linear(op)", lambda x, w, b: F.linear(x, w, b) + F.linear(x, w),
             [layout(In((4, 5)), In((3, 5)), In((3,))), layout(In((2, 3, 5), nc=True), In((3, 5), nc=True), In((3,))),
              layout(In((1, 1)), In((1, 1)), In((1,)))], (linalg_ops.Linear,)),
        Case("Softmax", lambda a: F.softmax(a, dim=-1) + F.softmax(a, dim=0).sum(0),
             [layout(In((3, 4))), layout(In((3, 4), nc=True)), layout(In((1, 1))), layout(In((2, 3, 5)))],
              (nn_ops.Softmax,)),
        Case("LogSoftmax", lambda a: F.log_softmax(a, dim=-1),
             [layout(In((3, 4))), layout(In((3, 4), nc=True)), layout(In((1, 1)))], (nn_ops.LogSoftmax,)),
        Case("CrossEntropy", lambda a, t: F.cross_entropy(a, t) + F.cross_entropy(a, t, ignore_index=1,
                                                                                  reduction="sum"),
             [layout(In((4, 5)), In((4,), "idx:5")), layout(In((4, 5), nc=True), In((4,), "idx:5")),
              layout(In((1, 1)), In((1,), "idx:1"))], (nn_ops.CrossEntropy,)),
        Case("LayerNorm(op)", lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b),
             [layout(In((3, 5)), In((5,)), In((5,))), layout(In((2, 3, 4), nc=True), In((4,), nc=True), In((4,))),
              layout(In((2, 1)), In((1,)), In((1,)))], (nn_ops.LayerNorm,)),
        Case("Embedding(op)", lambda i, w: F.embedding(i, w),
             [layout(In((2, 3), "idx:4"), In((4, 3))), layout(In((5,), "idx:2"), In((2, 3), nc=True))],
              (nn_ops.Embedding,)),
        Case("Sum", lambda a: a.sum() + a.sum(dim=-1).sum() * 0.5 + a.mean(dim=0, keepdim=True).sum(),
             [layout(In((3, 4))), layout(In((2, 3, 4), nc=True)), layout(In((1,)))], (reduce_ops.Sum,)),
        Case("Amax", lambda a: a.amax(dim=-1) + a.max() + a.max(dim=0).values.sum(),
             [layout(In((3, 4), "distinct")), layout(In((3, 4), "distinct", nc=True)), layout(In((1, 1), "distinct"))],
             (reduce_ops.Amax,)),
        Case("Amin", lambda a: a.amin(dim=0) + a.min(),
             [layout(In((3, 4), "distinct")), layout(In((3, 4), "distinct", nc=True)), layout(In((1, 1), "distinct"))],
             (reduce_ops.Amin,)),
        Case("Reshape", lambda a: a.reshape(2, -1) * mt.arange(a.numel() // 2, dtype=mt.float64,
                                                              device=a.device),
             [layout(In((3, 4))), layout(In((3, 4), nc=True)), layout(In((2, 1)))], (shape_ops.Reshape,)),
        Case("Permute", lambda a: a.permute(2, 0, 1).reshape(-1) * mt.arange(a.numel(), dtype=mt.float64,
                                                                             device=a.device),
             [layout(In((2, 3, 4))), layout(In((2, 3, 4), nc=True)), layout(In((1, 1, 1)))], (shape_ops.Permute,)),
        Case("Expand", lambda a: a.expand(2, *a.shape) * mt.arange(2, dtype=mt.float64, device=a.device
                                                                   ).reshape(2, *[1] * a.ndim),
             [layout(In((3, 1))), layout(In((3, 4), nc=True)), layout(In((1,)))], (shape_ops.Expand,)),
        Case("GetItem", lambda a, i, m: a[1:, ::2].sum() + a[i].sum(0) + (a[m] * 3).sum(),
             [layout(In((3, 4)), In((5,), "idx:3"), In((3, 4), "mask")),
              layout(In((4, 3), nc=True), In((2,), "idx:4"), In((4, 3), "mask"))], (shape_ops.GetItem,)),
        Case("Cat", lambda a, b: mt.cat([a, b, a], dim=-1),
             [layout(In((3, 4)), In((3, 2))), layout(In((2, 3), nc=True), In((2, 1))), layout(In((1,)), In((1,)))],
             (shape_ops.Cat,)),
        Case("MaskedFill", lambda a, m: a.masked_fill(m, 0.5),
             [layout(In((3, 4)), In((3, 4), "mask")), layout(In((3, 4), nc=True), In((4,), "mask"))],
              (shape_ops.MaskedFill,)),
        Case("ToDevice", _round_trip, [layout(In((3, 4))), layout(In((2, 3), nc=True))], (shape_ops.ToDevice,)),
        Case("ScaledDotProductAttention",
             lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
             + F.scaled_dot_product_attention(q, k, v, scale=1.0) * 0.5, attn,
             (attention_ops.ScaledDotProductAttention,)),
        Case("ScaledDotProductAttention(causal, mask)",
             lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, is_causal=True)
             + F.scaled_dot_product_attention(q, k, v, attn_mask=m),
             [layout(In((2, 3, 4)), In((2, 3, 4)), In((2, 3, 4)), In((3, 3), "keep")),
              layout(In((1, 2, 4, 4), nc=True), In((1, 2, 4, 4)), In((1, 2, 4, 4)), In((1, 1, 4, 4), "keep"))],
             (attention_ops.ScaledDotProductAttention,)),
        Case("Contiguous", lambda a: a.contiguous() * a.contiguous(),
             [layout(In((3, 4), nc=True)), layout(In((2, 3, 4), nc=True))], (shape_ops.Contiguous,)),
        Case("module backward hooks", hooked, [layout(n34, n34), layout(nc34, In((1, 4)))], (HookPoint,)),
    ] + _more_ops(unary, binary)


def _more_ops(unary, binary):
    """Item assignment, selection, padding and the extra elementwise math (several are CPU-only)."""
    cpu = ("cpu",)

    def setitem(a, v):
        x = a.clone()
        x[1:, ::2] = v
        return x * x

    def steps(a):        # piecewise constant: zero gradient; "grid" values stay clear of every jump
        return a.floor() + a.ceil() + a.round() + a.round(1) + a.trunc() + a.sign() + a * 0.5

    return [
        Case("Sin", lambda a: a.sin(), unary(), (unary_ops.Sin,), devices=cpu),
        Case("Cos", lambda a: a.cos(), unary(), (unary_ops.Cos,), devices=cpu),
        Case("Step", steps, unary("grid"), (unary_ops.Step,), devices=cpu),
        Case("FloorDivide", lambda a, b: a // b + a, binary("n", "pos"), (unary_ops.FloorDivide,), devices=cpu),
        Case("Remainder", lambda a, b: a % b, binary("n", "pos"), (unary_ops.Remainder,), devices=cpu),
        Case("Clone", lambda a: a.clone() * a, unary(), (select_ops.Clone,)),
        Case("LSTMPointwise", lambda gates, c: select_ops.LSTMPointwise.apply(gates, c),
             [layout(In((3, 8)), In((3, 2))), layout(In((2, 12), nc=True), In((2, 3))), layout(In((1, 4)), In((1, 1)))],
             (select_ops.LSTMPointwise,)),
        Case("SetItem", setitem, [layout(In((3, 4)), In((2, 2))), layout(In((3, 4), nc=True), In((2,))),
                                  layout(In((2, 5)), In((1,)))], (select_ops.SetItem,)),
        Case("TriMask", lambda a: a.tril() + a.triu(1) * 2,
             [layout(In((3, 4))), layout(In((2, 3, 3), nc=True)), layout(In((1, 1)))], (select_ops.TriMask,)),
        Case("Gather", lambda a, i: a.gather(1, i).sum() + a.sort(dim=-1).values * 2 + a.topk(2).values.sum(),
             [layout(In((3, 4), "distinct"), In((3, 5), "idx:4")), layout(In((3, 4), "distinct", nc=True),
                                                                   In((3, 2), "idx:4"))], (select_ops.Gather,),
             devices=cpu),
        Case("CumSum", lambda a: a.cumsum(0) + a.cumsum(-1) * 2,
             [layout(In((3, 4))), layout(In((3, 4), nc=True)), layout(In((1, 1)))], (select_ops.CumSum,), devices=cpu),
        Case("Pad", lambda a: F.pad(a, (1, 2, 0, 1), value=0.5) * 3,
             [layout(In((3, 4))), layout(In((2, 3, 4), nc=True)), layout(In((1, 1)))], (select_ops.Pad,)),
    ]


def _round_trip(a: Tensor) -> Tensor:
    """cpu → cuda → cpu (or the reverse): needs a second device, so it runs only where CUDA is available."""
    other = "cuda" if a.device.backend.host_memory else "cpu"
    return (a.to(other) * 2.0).to(a.device)


def _layers():
    nn = mt.nn
    d = dict(d_model=8, nhead=2, dim_feedforward=12, dropout=0.0, batch_first=True)
    x238, x238nc, mem = In((2, 3, 8)), In((2, 3, 8), nc=True), In((2, 4, 8))

    def seq():
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))

    def enc(norm_first):
        return nn.TransformerEncoder(nn.TransformerEncoderLayer(norm_first=norm_first, **d), 2,
                                     norm=nn.LayerNorm(8))

    def dec(norm_first):
        return nn.TransformerDecoder(nn.TransformerDecoderLayer(norm_first=norm_first, **d), 2)

    both = [layout(x238, norm_first=True), layout(x238nc, norm_first=False)]
    return [
        Case("nn.Linear", lambda m, x: m(x), [layout(In((4, 5))), layout(In((2, 3, 5), nc=True)), layout(In((1, 5)))],
             make=lambda: nn.Linear(5, 3)),
        Case("nn.Embedding", lambda m, i: m(i), [layout(In((2, 3), "idx:6")), layout(In((1,), "idx:6"))],
             make=lambda: nn.Embedding(6, 4)),
        Case("nn.LayerNorm", lambda m, x: m(x), [layout(In((3, 5))), layout(In((2, 3, 5), nc=True))],
             make=lambda: nn.LayerNorm(5)),
        Case("nn.Dropout", lambda m, x: m(x), [layout(In((3, 5))), layout(In((2, 3, 5), nc=True))],
             make=lambda: nn.Dropout(0.3), seed_each_call=True),
        Case("nn.ReLU", lambda m, x: m(x), [layout(In((3, 5), "grid")), layout(In((2, 3), "grid", nc=True))],
             make=nn.ReLU),
        Case("nn.GELU", lambda m, x: m(x), [layout(In((3, 5))), layout(In((2, 3), nc=True))], make=nn.GELU),
        Case("nn.Tanh", lambda m, x: m(x), [layout(In((3, 5))), layout(In((2, 3), nc=True))], make=nn.Tanh),
        Case("nn.Identity", lambda m, x: m(x) * m(x), [layout(In((3, 5))), layout(In((2, 3), nc=True))],
             make=nn.Identity),
        Case("nn.Sequential", lambda m, x: m(x), [layout(In((3, 4))), layout(In((2, 3, 4), nc=True))], make=seq),
        Case("nn.MultiheadAttention", _multihead_attention,
             [layout(x238, mem, In((2, 4), "mask"), batch_first=True),
              layout(In((3, 2, 8), nc=True), In((4, 2, 8)), In((2, 4), "mask"), batch_first=False)],
             make=lambda batch_first: nn.MultiheadAttention(8, 2, batch_first=batch_first),
             covers=(attention_ops.PackedSelfAttention,)),
        Case("nn.PositionalEncoding", lambda m, x: m(x), [layout(In((2, 5, 8))), layout(In((1, 1, 8), nc=True))],
             make=lambda: nn.PositionalEncoding(8, dropout=0.0)),
        Case("nn.FeedForward", lambda m, x: m(x), [layout(x238), layout(x238nc)], make=lambda: nn.FeedForward(8, 12),
             covers=(linalg_ops.LinearRelu,)),
        Case("nn.TransformerEncoderLayer", lambda m, x: m(x, is_causal=True), both,
             make=lambda norm_first: nn.TransformerEncoderLayer(norm_first=norm_first, **d)),
        Case("nn.TransformerDecoderLayer", lambda m, x, y: m(x, y, tgt_is_causal=True),
             [layout(x238, mem, norm_first=True), layout(x238nc, mem, norm_first=False)],
             make=lambda norm_first: nn.TransformerDecoderLayer(norm_first=norm_first, **d)),
        Case("nn.TransformerEncoder", lambda m, x: m(x), both, make=enc),
        Case("nn.TransformerDecoder", lambda m, x, y: m(x, y), [layout(x238, mem, norm_first=True),
                                                                 layout(x238nc, mem, norm_first=False)], make=dec),
        *_more_layers(),
        Case("nn.Transformer", lambda m, x, y: m(x, y, tgt_is_causal=True),
             [layout(mem, x238, norm_first=True), layout(mem, x238nc, norm_first=False)],
             make=lambda norm_first: nn.Transformer(num_encoder_layers=1, num_decoder_layers=1,
                                                    norm_first=norm_first, **d)),
    ]


def _flat(out):
    """(output, (h, c)) -> (output, h, c): gradcheck takes a flat tuple of tensors."""
    if isinstance(out, Tensor):
        return out
    return tuple(t for o in out for t in (_flat(o) if isinstance(o, (tuple, list)) else (o,)))


def _more_layers():
    nn = mt.nn
    x34 = In((3, 4))
    rnn_in = [layout(In((2, 3, 4))), layout(In((3, 2, 4), nc=True), batch_first=False)]
    return [
        Case("nn.Sigmoid", lambda m, x: m(x), [layout(x34), layout(In((2, 3), nc=True))], make=nn.Sigmoid),
        Case("nn.SiLU", lambda m, x: m(x), [layout(x34), layout(In((2, 3), nc=True))], make=nn.SiLU),
        Case("nn.Softmax", lambda m, x: m(x), [layout(x34), layout(In((2, 3, 4), nc=True))],
             make=lambda: nn.Softmax(dim=-1)),
        Case("nn.LogSoftmax", lambda m, x: m(x), [layout(x34), layout(In((2, 3, 4), nc=True))],
             make=lambda: nn.LogSoftmax(dim=-1)),
        Case("nn.CrossEntropyLoss", lambda m, x, t: m(x, t), [layout(In((4, 5)), In((4,), "idx:5")),
                                                             layout(In((4, 5), nc=True), In((4,), "idx:5"))],
             make=lambda: nn.CrossEntropyLoss(ignore_index=2)),
        Case("nn.NLLLoss", lambda m, x, t: m(x, t), [layout(In((4, 5)), In((4,), "idx:5")),
                                                    layout(In((4, 5), nc=True), In((4,), "idx:5"))], make=nn.NLLLoss),
        Case("nn.MSELoss", lambda m, x, t: m(x, t), [layout(x34, x34), layout(In((3, 4), nc=True), In((4,)))],
             make=nn.MSELoss),
        Case("nn.L1Loss", lambda m, x, t: m(x, t), [layout(In((3, 4), "grid"), In((3, 4), "grid2")),
                                                   layout(In((3, 4), "grid", nc=True), In((3, 4), "grid2"))],
             make=nn.L1Loss),
        Case("nn.BCEWithLogitsLoss", lambda m, x, t: m(x, t), [layout(x34, In((3, 4), "unit")),
                                                              layout(In((3, 4), nc=True), In((3, 4), "unit"))],
             make=nn.BCEWithLogitsLoss),
        Case("nn.RNN", lambda m, x: _flat(m(x)), rnn_in,
             make=lambda batch_first=True: nn.RNN(4, 5, num_layers=2, batch_first=batch_first)),
        Case("nn.LSTM", lambda m, x: _flat(m(x)), rnn_in,
             make=lambda batch_first=True: nn.LSTM(4, 5, batch_first=batch_first)),
        Case("nn.GRU", lambda m, x: _flat(m(x)), rnn_in,
             make=lambda batch_first=True: nn.GRU(4, 5, batch_first=batch_first)),
        Case("nn.RNNCell", lambda m, x, h: m(x, h), [layout(In((3, 4)), In((3, 5))),
                                                     layout(In((3, 4), nc=True), In((3, 5)))],
             make=lambda: nn.RNNCell(4, 5)),
        Case("nn.LSTMCell", lambda m, x, h, c: _flat(m(x, (h, c))),
             [layout(In((3, 4)), In((3, 5)), In((3, 5))), layout(In((3, 4), nc=True), In((3, 5)), In((3, 5)))],
             make=lambda: nn.LSTMCell(4, 5)),
        Case("nn.GRUCell", lambda m, x, h: m(x, h), [layout(In((3, 4)), In((3, 5))),
                                                     layout(In((3, 4), nc=True), In((3, 5)))],
             make=lambda: nn.GRUCell(4, 5)),
        Case("nn.RotaryEmbedding", lambda m, x: m(x) + m(x, offset=3), [layout(In((2, 2, 3, 8))),
                                                                       layout(In((1, 1, 5, 8), nc=True))],
             make=lambda: nn.RotaryEmbedding(8)),
    ]


def _multihead_attention(m, q, kv, pad):
    out, w = m(q, kv, kv, key_padding_mask=pad)                 # cross-attention with padding, weights returned
    self_out, _ = m(q, q, q, need_weights=False, is_causal=True)
    return out, w, self_out


EXCLUDED = {
    "_View": "base class of Reshape, Permute, Expand and GetItem; never applied itself",
    "_RowKernel": "base class of Softmax and LogSoftmax; never applied itself",
    "_Extreme": "base class of Amax and Amin; never applied itself",
    "nn.Module": "the base class; every layer built on it is checked",
    "nn.Parameter": "a tensor, not a layer",
    "nn.ModuleList": "a container without forward(); its members are checked on their own",
    "nn.ModuleDict": "a container without forward(); its members are checked on their own",
    "nn.RNNBase": "base class of RNN, LSTM and GRU, which are checked",
    "RingAttention": "needs an MPI process group (mpiexec); tests/distributed/test_ring.py checks its output "
                     "and gradients against scaled_dot_product_attention on several ranks",
}


def cases() -> list[Case]:
    return _ops() + _layers()
