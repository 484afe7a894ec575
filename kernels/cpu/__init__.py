"""Numba CPU kernels: the same names and signatures as `minitrans.kernels.reference`
(see docs/kernels.md). Each module's docstring states its tiles and memory plan."""
from .adam import adam_step
from .attention import attention_backward, attention_forward
from .cross_entropy import cross_entropy_backward, cross_entropy_forward
from .layer_norm import layer_norm_backward, layer_norm_forward
from .softmax import (log_softmax_backward, log_softmax_forward, softmax_backward,
                      softmax_forward)

__all__ = [
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "layer_norm_forward", "layer_norm_backward",
    "attention_forward", "attention_backward",
    "adam_step",
]
