"""Recurrent layers with PyTorch's signatures and parameter names: RNN, LSTM, GRU and their cells.

Built from primitive ops. The input projection of a whole sequence is one matrix product
(``x·W_ihᵀ + b_ih`` for all time steps at once); only the hidden projection runs per step.
Gate order and formulas follow ``torch.nn``, so state dicts load across:

    RNN : h' = tanh(W_ih x + b_ih + W_hh h + b_hh)            (or relu)
    LSTM: i, f, g, o = σ, σ, tanh, σ of the four gate blocks;  c' = f·c + i·g;  h' = o·tanh(c')
    GRU : r, z = σ(...);  n = tanh(W_in x + b_in + r·(W_hn h + b_hn));  h' = (1 − z)·n + z·h
"""
from __future__ import annotations

import math

from .._functions import cat, stack
from ..ops.select import LSTMPointwise
from ..tensor import Tensor, zeros
from . import functional as F
from . import init
from .module import Module, Parameter

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# ------------------------------------------------------------------ one step of each cell
def _rnn_step(gi: Tensor, h: Tensor, w_hh, b_hh, relu: bool) -> Tensor:
    pre = gi + F.linear(h, w_hh, b_hh)
    return pre.relu() if relu else pre.tanh()


FUSED_LSTM = {"on": True}   # one node for the gate nonlinearities (profile: per-op overhead dominated)


def _lstm_step(gi: Tensor, h: Tensor, c: Tensor, w_hh, b_hh):
    H = h.shape[-1]
    gates = gi + F.linear(h, w_hh, b_hh)
    if FUSED_LSTM["on"]:
        hc = LSTMPointwise.apply(gates, c)
        return hc[..., :H], hc[..., H:]
    i, f = gates[..., :H].sigmoid(), gates[..., H:2 * H].sigmoid()
    g, o = gates[..., 2 * H:3 * H].tanh(), gates[..., 3 * H:].sigmoid()
    c = f * c + i * g
    return o * c.tanh(), c


def _gru_step(gi: Tensor, h: Tensor, w_hh, b_hh) -> Tensor:
    H = h.shape[-1]
    gh = F.linear(h, w_hh, b_hh)
    r = (gi[..., :H] + gh[..., :H]).sigmoid()
    z = (gi[..., H:2 * H] + gh[..., H:2 * H]).sigmoid()
    n = (gi[..., 2 * H:] + r * gh[..., 2 * H:]).tanh()
    return (1.0 - z) * n + z * h


class RNNBase(Module):
    """The shared machinery of RNN, LSTM and GRU: parameters per layer and direction, shapes, the time loop."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError(f"{name}: dropout should be a number in range [0, 1] representing the probability "
                             f"of an element being zeroed, got {dropout!r}")
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size > 0 (LSTM with projections) is not supported")
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, 0
        D = 2 if bidirectional else 1
        G = _GATES[mode] * hidden_size
        self._flat_weights_names = []
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                ps = [("weight_ih" + sfx, (G, n_in)), ("weight_hh" + sfx, (G, hidden_size))]
                if bias:
                    ps += [("bias_ih" + sfx, (G,)), ("bias_hh" + sfx, (G,))]
                for pname, shape in ps:
                    setattr(self, pname, Parameter(zeros(*shape, dtype=dtype, device=device)))
                    self._flat_weights_names.append(pname)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(−1/√hidden_size, 1/√hidden_size), as PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _layer_params(self, layer: int, d: int):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        get = lambda n: getattr(self, n + sfx) if self.bias or not n.startswith("bias") else None  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _check_input(self, input: Tensor):
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input of 2 (unbatched) or 3 dims, got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}(input_size={self.input_size}) got input of shape {tuple(input.shape)}")
        if not input.dtype.is_floating_point:
            raise TypeError(f"{name}: input must be floating point, got dtype {input.dtype}")
        w = self.weight_ih_l0
        if input.dtype is not w.dtype:
            raise RuntimeError(f"{name}: input has dtype {input.dtype} but the weights have dtype {w.dtype}")

    def _check_hidden(self, h: Tensor, batch: int | None, what: str) -> None:
        D = 2 if self.bidirectional else 1
        want = (self.num_layers * D,) + ((batch,) if batch is not None else ()) + (self.hidden_size,)
        if not isinstance(h, Tensor):
            raise TypeError(f"{type(self).__name__}: {what} must be a Tensor, got {type(h).__name__}")
        if tuple(h.shape) != want:
            raise ValueError(f"{type(self).__name__}: expected {what} of shape {want}, got {tuple(h.shape)}")

    def _run(self, input: Tensor, hx):
        """input (L, N, in) or batch_first/unbatched; hx: tuple of states, each (layers·D, N, H) or None."""
        self._check_input(input)
        unbatched = input.ndim == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        L, N = x.shape[0], x.shape[1]
        D = 2 if self.bidirectional else 1
        n_states = 2 if self.mode == "LSTM" else 1
        names = ("h0", "c0")[:n_states]
        states = []
        for k in range(n_states):
            s = None if hx is None else hx[k]
            if s is None:
                s = zeros(self.num_layers * D, N, self.hidden_size, dtype=input.dtype, device=input.device)
            else:
                self._check_hidden(s, None if unbatched else N, names[k])
                s = s.unsqueeze(1) if unbatched else s
            states.append(s)
        finals = [[] for _ in range(n_states)]
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                w_ih, w_hh, b_ih, b_hh = self._layer_params(layer, d)
                gi = F.linear(x, w_ih, b_ih)                       # the whole sequence at once: (L, N, G)
                st = [s[layer * D + d] for s in states]
                steps = range(L - 1, -1, -1) if d else range(L)
                ys = [None] * L
                for t in steps:
                    if self.mode == "LSTM":
                        st = list(_lstm_step(gi[t], st[0], st[1], w_hh, b_hh))
                    elif self.mode == "GRU":
                        st = [_gru_step(gi[t], st[0], w_hh, b_hh)]
                    else:
                        st = [_rnn_step(gi[t], st[0], w_hh, b_hh, self.mode == "RNN_RELU")]
                    ys[t] = st[0]
                outs.append(stack(ys, 0))
                for k in range(n_states):
                    finals[k].append(st[k])
            x = outs[0] if D == 1 else cat(outs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        out = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        hn = [stack(f, 0) for f in finals]
        if unbatched:
            hn = [h.squeeze(1) for h in hn]
        return out, hn

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False)``; ``forward(input, hx=None) -> (output, h_n)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r}; use 'tanh' or 'relu'")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None):
        out, (hn,) = self._run(input, None if hx is None else (hx,))
        return out, hn


class LSTM(RNNBase):
    """``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False)``; ``forward(input, (h0, c0)=None) -> (output, (h_n, c_n))``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)

    def forward(self, input: Tensor, hx=None):
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTM: hx must be a tuple (h0, c0)")
        out, (hn, cn) = self._run(input, hx)
        return out, (hn, cn)


class GRU(RNNBase):
    """``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False)``; ``forward(input, hx=None) -> (output, h_n)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None):
        out, (hn,) = self._run(input, None if hx is None else (hx,))
        return out, hn


# ------------------------------------------------------------------ single cells
class _CellBase(Module):
    def __init__(self, input_size: int, hidden_size: int, bias: bool, gates: int, device=None, dtype=None) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = Parameter(zeros(gates * hidden_size, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(zeros(gates * hidden_size, hidden_size, dtype=dtype, device=device))
        if bias:
            self.bias_ih = Parameter(zeros(gates * hidden_size, dtype=dtype, device=device))
            self.bias_hh = Parameter(zeros(gates * hidden_size, dtype=dtype, device=device))
        else:
            self.bias_ih = self.bias_hh = None
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _zeros(self, x: Tensor) -> Tensor:
        return zeros(*x.shape[:-1], self.hidden_size, dtype=x.dtype, device=x.device)

    def _input_gates(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}(input_size={self.input_size}) expects input of shape "
                             f"(batch, {self.input_size}) or ({self.input_size},), got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        return F.linear(x, self.weight_ih, self.bias_ih)


class RNNCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r}; use 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        h = self._zeros(input) if hx is None else hx
        return _rnn_step(self._input_gates(input), h, self.weight_hh, self.bias_hh, self.nonlinearity == "relu")


class LSTMCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx=None):
        h, c = (self._zeros(input), self._zeros(input)) if hx is None else hx
        return _lstm_step(self._input_gates(input), h, c, self.weight_hh, self.bias_hh)


class GRUCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        h = self._zeros(input) if hx is None else hx
        return _gru_step(self._input_gates(input), h, self.weight_hh, self.bias_hh)

