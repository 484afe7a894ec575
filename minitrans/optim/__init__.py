"""``minitrans.optim``: SGD, Adam, AdamW, learning-rate schedules and gradient clipping."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD
from .clip import clip_grad_norm_

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler", "clip_grad_norm_"]
