"""The names a PyTorch transformer-training program uses: each exists in minitrans, or
docs/differences.md lists it (as `torch.X`, `nn.X`, `F.X` or `Tensor.X`) with a reason."""
import os
import re

import pytest

import minitrans as mt
import minitrans.nn.functional as F
from minitrans import nn

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                   "differences.md")

TORCH = """tensor zeros ones full arange linspace empty randn rand randint randperm manual_seed zeros_like ones_like
full_like randn_like from_numpy as_tensor is_tensor numel cat stack split chunk where tril triu exp log sin cos
sqrt rsqrt tanh sigmoid relu softmax log_softmax multinomial topk sort argsort argmax argmin max min sum mean var std
abs clamp neg sign floor ceil round div floor_divide remainder pow matmul bmm einsum outer cumsum masked_fill narrow
gather flatten reshape permute transpose squeeze unsqueeze allclose isnan isinf isfinite maximum minimum no_grad
enable_grad set_grad_enabled is_grad_enabled inference_mode float32 float64 int64 long float double bool dtype device
Tensor save load nn optim cuda autograd serialization Generator compile get_rng_state set_rng_state
optim.Adam optim.AdamW optim.SGD optim.lr_scheduler.LambdaLR optim.lr_scheduler.CosineAnnealingLR cuda.is_available
autograd.grad_mode serialization.safe_globals serialization.add_safe_globals""".split()
NN = """Module Parameter Linear Embedding LayerNorm Dropout ReLU GELU Tanh Sigmoid SiLU Softmax LogSoftmax Identity
Sequential ModuleList ModuleDict MultiheadAttention Transformer TransformerEncoder TransformerEncoderLayer
TransformerDecoder TransformerDecoderLayer RNN LSTM GRU RNNCell LSTMCell GRUCell CrossEntropyLoss NLLLoss MSELoss
L1Loss BCEWithLogitsLoss init.xavier_uniform_ init.xavier_normal_ init.normal_ init.uniform_ init.zeros_ init.ones_
init.kaiming_uniform_ utils.clip_grad_norm_ utils.rnn.pack_padded_sequence functional""".split()
FUNCTIONAL = """relu gelu silu tanh sigmoid softmax log_softmax cross_entropy nll_loss mse_loss l1_loss
binary_cross_entropy_with_logits dropout linear embedding layer_norm scaled_dot_product_attention pad one_hot""".split()
TENSOR = """size shape dim ndim view reshape permute transpose contiguous unsqueeze squeeze expand expand_as repeat to
cuda cpu float double long bool item tolist numpy detach clone backward grad requires_grad requires_grad_ zero_ fill_
copy_ add_ mul_ masked_fill masked_fill_ softmax log_softmax argmax max min sum mean exp log sin cos sqrt tanh sigmoid
relu t T narrow div topk sort gather tril triu new_zeros new_ones type_as eq ne lt gt numel data device dtype is_leaf
grad_fn register_hook flatten norm pow abs clamp chunk split view_as multinomial cumsum flip repeat_interleave
__index__ __setitem__ __getitem__ __floordiv__ __mod__ __len__ __matmul__""".split()
MODULE = """parameters named_parameters buffers named_buffers modules named_modules children train eval to zero_grad
state_dict load_state_dict register_buffer apply requires_grad_ double float""".split()
NAMESPACES = [("torch", mt, TORCH), ("nn", nn, NN), ("F", F, FUNCTIONAL), ("Tensor", mt.Tensor, TENSOR),
              ("nn.Module", nn.Module, MODULE)]


def _resolve(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _documented() -> set:
    """The names in the table of names minitrans does not provide."""
    with open(DOC) as f:
        text = f.read()
    start = text.index("that minitrans does not provide")
    rows = [line for line in text[start:].splitlines() if line.startswith("| `")]
    return {re.match(r"\| `([A-Za-z_.]+)`", line).group(1) for line in rows}


@pytest.mark.parametrize("label,ns,names", NAMESPACES, ids=[n[0] for n in NAMESPACES])
def test_every_name_exists_or_is_documented(label, ns, names):
    documented = _documented()
    missing = []
    for name in names:
        try:
            _resolve(ns, name)
        except AttributeError:
            if f"{label}.{name}" not in documented:
                missing.append(f"{label}.{name}")
    assert not missing, f"neither in minitrans nor explained in docs/differences.md: {missing}"


def test_documented_absences_are_really_absent():
    # a name listed as missing that has since been added must leave the list
    documented = _documented()
    for label, ns, names in NAMESPACES:
        for name in names:
            if f"{label}.{name}" in documented:
                with pytest.raises(AttributeError):
                    _resolve(ns, name)
