"""minitrans: a tensor and reverse-mode autograd engine with hand-derived attention.

    import minitrans as mt
    x = mt.tensor([[1., 2.]], requires_grad=True)
    w = mt.randn(2, 3, requires_grad=True)
    (x @ w).relu().sum().backward(); x.grad
"""
# Importing minitrans changes no thread count and no Numba setting: minitrans.threads is the one
# place that does, when asked (mt.set_num_threads, mt.set_threading_layer).
import importlib as _importlib

# autograd comes first: its gradcheck module builds tensors, so the tensor class (which needs
# autograd.engine) must be assembled while autograd is importing, not the other way round
from . import autograd
from .autograd import enable_grad, no_grad, set_grad_enabled, is_grad_enabled
from ._dtype import bool_ as bool  # noqa: A001
from ._dtype import dtype, float32, float64, int64
from ._functions import (abs, add, all, allclose, amax, amin, any, argmax, argmin, argsort, as_tensor, bmm, cat,
                         ceil, chunk, clamp, clip, clone, concatenate, cos, cumsum, div, exp, flatten, flip, floor,
                         floor_divide, gather, gelu, inference_mode, is_tensor, isfinite, isinf, isnan, log,
                         log_softmax, masked_fill, matmul, max, maximum, mean, min, minimum, mul, multinomial,
                         narrow, neg, negative, norm, numel, outer, permute, pow, relu, remainder, repeat_interleave,
                         reshape, round, rsqrt, sigmoid, sign, sin, softmax, sort, split, sqrt, square, squeeze,
                         stack, std, sub, sum, tanh, topk, transpose, tril, triu, trunc, unsqueeze, var, where)
from .device import device
from .random import (get_rng_state, manual_seed, rand, rand_like, randint, randint_like, randn, randn_like,
                     randperm, set_rng_state)
from .tensor import (Tensor, arange, empty, empty_like, from_numpy, full, full_like, linspace, ones, ones_like,
                     tensor, zeros, zeros_like)
from .backends import get_kernels, set_kernels
from .threads import get_num_threads, num_threads, set_num_threads, set_threading_layer, threading_layer

float = float32  # noqa: A001
double = float64
long = int64

__version__ = "0.1.0"

__all__ = [
    # tensors, dtypes, devices
    "Tensor", "tensor", "as_tensor", "from_numpy", "is_tensor", "numel", "dtype", "float32", "float64", "int64",
    "bool", "float", "double", "long", "device",
    # creation and randomness
    "zeros", "ones", "empty", "full", "arange", "linspace", "zeros_like", "ones_like", "empty_like", "full_like",
    "manual_seed", "get_rng_state", "set_rng_state", "rand", "randn", "randint", "randperm", "rand_like",
    "randn_like", "randint_like", "multinomial",
    # math
    "add", "sub", "mul", "div", "floor_divide", "remainder", "pow", "neg", "negative", "abs", "sign", "exp", "log",
    "sqrt", "rsqrt", "square", "sin", "cos", "tanh", "sigmoid", "relu", "gelu", "softmax", "log_softmax", "clamp",
    "clip", "floor", "ceil", "round", "trunc", "maximum", "minimum", "where", "masked_fill", "matmul", "isnan",
    "isinf", "isfinite", "allclose",
    # reductions, selection
    "sum", "mean", "var", "std", "amax", "amin", "max", "min", "argmax", "argmin", "any", "all", "topk", "sort",
    "argsort", "gather", "cumsum", "norm", "bmm", "outer",
    # shape
    "reshape", "permute", "transpose", "squeeze", "unsqueeze", "flatten", "cat", "concatenate", "stack", "split",
    "chunk", "narrow", "tril", "triu", "clone", "flip", "repeat_interleave",
    # autograd
    "no_grad", "enable_grad", "inference_mode", "set_grad_enabled", "is_grad_enabled",
    # checkpoints (subpackages such as nn and optim are imported by name, as with torch)
    "save", "load", "get_kernels", "set_kernels",
    # threads (torch.set_num_threads / get_num_threads), decided in minitrans.threads only
    "set_num_threads", "get_num_threads", "num_threads", "set_threading_layer", "threading_layer",
]


def __getattr__(name):
    # subpackages load on first use (as torch's are imported by name), which keeps `import minitrans` light
    if name in ("nn", "optim", "cuda", "data", "models", "serialization"):
        return _importlib.import_module(f".{name}", __name__)
    if name in ("save", "load"):
        return getattr(_importlib.import_module(".serialization", __name__), name)
    raise AttributeError(f"module 'minitrans' has no attribute {name!r}")
