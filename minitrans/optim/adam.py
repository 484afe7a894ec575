"""Adam and AdamW; the update runs as one fused kernel per parameter (``adam_step`` of the backend)."""
from __future__ import annotations

from .optimizer import Optimizer, _check_numbers


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as ``torch.optim.Adam``."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        _check_numbers(name, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: invalid lr={lr}, betas={betas}, eps={eps} or "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self) -> None:
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = p.device.backend
                st = self.state.get(p)
                if st is None:
                    st = self.state[p] = {"step": 0, "exp_avg": xp.zeros(p.shape, p._data.dtype),
                                          "exp_avg_sq": xp.zeros(p.shape, p._data.dtype)}
                st["step"] += 1
                if not p._data.flags.c_contiguous:  # the kernel updates a flat view in place
                    p._data = xp.ascontiguousarray(p._data)
                g = xp.ascontiguousarray(p.grad._data.astype(p._data.dtype, copy=False))
                xp.adam_step(p._data.reshape(-1), g.reshape(-1), st["exp_avg"].reshape(-1),
                             st["exp_avg_sq"].reshape(-1), group["lr"], b1, b2, group["eps"],
                             group["weight_decay"], st["step"], self.decoupled)
                p._vc[0] += 1


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
