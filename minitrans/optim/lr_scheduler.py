"""Learning-rate schedules: LambdaLR, warm-up then inverse square root (the original Transformer's), cosine."""
from __future__ import annotations

import math

from .optimizer import Optimizer


class LRScheduler:
    """Sets each group's lr to ``base_lr · factor(step)``; ``step()`` once per optimizer step."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} needs an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def factor(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self) -> None:
        self.last_epoch += 1
        f = self.factor(self.last_epoch)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambda")}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class LambdaLR(LRScheduler):
    def __init__(self, optimizer: Optimizer, lr_lambda, last_epoch: int = -1) -> None:
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        return self.lr_lambda(step)


class WarmupInverseSqrtLR(LRScheduler):
    """Linear warm-up over ``warmup_steps``, then decay ∝ 1/√step (peak factor 1 at the end of warm-up).

    With ``d_model`` given it is exactly the schedule of "Attention Is All You Need":
    lr = base · d_model^−0.5 · min(step^−0.5, step · warmup^−1.5).
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, d_model: int | None = None,
                 last_epoch: int = -1) -> None:
        if warmup_steps <= 0:
            raise ValueError(f"warmup_steps must be positive, got {warmup_steps}")
        self.warmup_steps, self.d_model = warmup_steps, d_model
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        s = max(step, 1)
        f = min(s ** -0.5, s * self.warmup_steps ** -1.5)
        return f * (self.d_model ** -0.5 if self.d_model else self.warmup_steps ** 0.5)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base − eta_min)·(1 + cos(π·step/T_max))/2."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        c = (1 + math.cos(math.pi * min(self.last_epoch, self.T_max) / self.T_max)) / 2
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.eta_min + (base - self.eta_min) * c


class WarmupCosineLR(LRScheduler):
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_factor`` at ``total_steps``."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, min_factor: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.warmup_steps, self.total_steps, self.min_factor = warmup_steps, total_steps, min_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_factor + (1 - self.min_factor) * (1 + math.cos(math.pi * t)) / 2
