"""``minitrans.nn.functional``: the functional forms of the nn ops (``import minitrans.nn.functional as F``).

The functions live in three files by theme, all re-exported here:
``functional_base`` (activations, ``linear``, softmax, ``layer_norm``, ``embedding``,
``dropout``, ``one_hot``, ``pad``), ``functional_losses`` (the losses) and
``functional_attention`` (``scaled_dot_product_attention`` and its composed reference).
"""
from __future__ import annotations

from .functional_attention import attention_reference, masked_softmax, scaled_dot_product_attention
from .functional_base import (dropout, embedding, gelu, layer_norm, linear, log_softmax, one_hot, pad, relu,
                              sigmoid, silu, softmax, tanh)
from .functional_losses import binary_cross_entropy_with_logits, cross_entropy, l1_loss, mse_loss, nll_loss

__all__ = ["attention_reference", "binary_cross_entropy_with_logits", "cross_entropy", "dropout", "embedding",
           "gelu", "l1_loss", "layer_norm", "linear", "log_softmax", "masked_softmax", "mse_loss", "nll_loss",
           "one_hot", "pad", "relu", "scaled_dot_product_attention", "sigmoid", "silu", "softmax", "tanh"]

# The public name of each function is ``minitrans.nn.functional.<name>``: pickle stores a
# function by its ``__module__``, so a layer that keeps an activation (``F.relu``) saves and
# loads under the same name whichever file defines it (NumPy's ``set_module`` does the same).
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
