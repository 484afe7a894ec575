"""``minitrans.nn.utils``: PyTorch's home of ``clip_grad_norm_``. The implementation lives in
``minitrans.optim.clip`` (the optimizers sit below the layers and must not import them)."""
from __future__ import annotations

from ..optim.clip import clip_grad_norm_

__all__ = ["clip_grad_norm_"]
