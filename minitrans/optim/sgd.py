"""SGD with momentum, dampening, Nesterov and weight decay (PyTorch's formulas)."""
from __future__ import annotations

from .optimizer import Optimizer, _check_numbers


class SGD(Optimizer):
    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        _check_numbers("SGD", lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: invalid lr={lr}, momentum={momentum} or weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def step(self) -> None:
        for group in self.param_groups:
            lr, mom, damp, wd, nest = (group[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov"))
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad._data
                if wd:
                    g = g + wd * p._data
                if mom:
                    st = self.state.setdefault(p, {})
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = g.copy()
                    else:
                        buf *= mom
                        buf += (1 - damp) * g
                    g = g + mom * buf if nest else buf
                p._data -= p._data.dtype.type(lr) * g
                p._version_counter[0] += 1
