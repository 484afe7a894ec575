"""Plain NumPy versions of every kernel in docs/kernels.md: the oracle for tests.

Readable first, fast never. Everything is computed in float64 and cast back to the
input dtype, so the reference is at least as accurate as any kernel it checks.
The attention reference materialises the full (B, Tq, Tk) score matrix.
"""
from __future__ import annotations

import math

import numpy as np


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# ----------------------------------------------------------------------------- softmax
def softmax_forward(x: np.ndarray) -> np.ndarray:
    """y = exp(x - max) / sum(exp(x - max)) over the last axis."""
    x64 = _f64(x)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)


def softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = y * (dy - sum(dy * y))."""
    y64, dy64 = _f64(y), _f64(dy)
    return (y64 * (dy64 - (dy64 * y64).sum(axis=-1, keepdims=True))).astype(y.dtype)


def log_softmax_forward(x: np.ndarray) -> np.ndarray:
    """y = x - logsumexp(x)."""
    x64 = _f64(x)
    m = x64.max(axis=-1, keepdims=True)
    return (x64 - m - np.log(np.exp(x64 - m).sum(axis=-1, keepdims=True))).astype(x.dtype)


def log_softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = dy - exp(y) * sum(dy)."""
    y64, dy64 = _f64(y), _f64(dy)
    return (dy64 - np.exp(y64) * dy64.sum(axis=-1, keepdims=True)).astype(y.dtype)


# ----------------------------------------------------------------------- cross-entropy
def _logsumexp(x64: np.ndarray) -> np.ndarray:
    m = x64.max(axis=-1)
    return m + np.log(np.exp(x64 - m[:, None]).sum(axis=-1))


def cross_entropy_forward(logits, target, ignore_index: int, label_smoothing: float):
    """loss[i] = (1-ls)(lse - x[t]) + ls (lse - mean(x)); 0 where t == ignore_index."""
    x64 = _f64(logits)
    n = x64.shape[0]
    lse = _logsumexp(x64)
    valid = target != ignore_index
    safe_t = np.where(valid, target, 0)              # ignored targets may be out of range
    nll = lse - x64[np.arange(n), safe_t]
    smooth = lse - x64.mean(axis=-1)
    loss = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    loss = np.where(valid, loss, 0.0)
    return loss.astype(logits.dtype), lse.astype(logits.dtype)


def cross_entropy_backward(logits, target, lse, dloss, ignore_index: int, label_smoothing: float):
    """dx[i] = dloss[i] (softmax(x[i]) - (1-ls) onehot(t) - ls / C); zero rows where ignored."""
    x64 = _f64(logits)
    n, c = x64.shape
    p = np.exp(x64 - _f64(lse)[:, None])
    valid = target != ignore_index
    safe_t = np.where(valid, target, 0)
    p[np.arange(n), safe_t] -= 1.0 - label_smoothing
    p -= label_smoothing / c
    dx = p * np.where(valid, _f64(dloss), 0.0)[:, None]
    return dx.astype(logits.dtype)


# -------------------------------------------------------------------------- layer norm
def layer_norm_forward(x, weight, bias, eps: float):
    """y = (x - mean) * rstd * weight + bias; rstd = 1 / sqrt(var + eps), biased var."""
    x64 = _f64(x)
    mean = x64.mean(axis=-1)
    xc = x64 - mean[:, None]
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1) + eps)
    y = xc * rstd[:, None]
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    dt = x.dtype
    return y.astype(dt), mean.astype(dt), rstd.astype(dt)


def layer_norm_backward(dy, x, weight, mean, rstd):
    """dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight."""
    dy64, x64 = _f64(dy), _f64(x)
    r = _f64(rstd)[:, None]
    xhat = (x64 - _f64(mean)[:, None]) * r
    g = dy64 * _f64(weight) if weight is not None else dy64
    dx = r * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    dt = x.dtype
    dweight = (dy64 * xhat).sum(axis=0).astype(dt) if weight is not None else None
    dbias = dy64.sum(axis=0).astype(dt)
    return dx.astype(dt), dweight, dbias


# --------------------------------------------------------------------------- attention
def _scores(q, k, bias, is_causal: bool, scale: float) -> np.ndarray:
    """S = scale Q K^T + bias, with -inf above the diagonal when causal. (B, Tq, Tk) float64."""
    s = scale * np.einsum("bid,bjd->bij", _f64(q), _f64(k))
    if bias is not None:
        s = s + _f64(bias)
    if is_causal:
        tq, tk = s.shape[1:]
        s = np.where(np.triu(np.ones((tq, tk), dtype=bool), k=1), -np.inf, s)
    return s


def attention_forward(q, k, v, bias, is_causal: bool, scale: float):
    """O = softmax(S) V, lse = logsumexp(S); fully masked rows give o = 0, lse = -inf."""
    s = _scores(q, k, bias, is_causal, scale)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)             # fully masked row: any finite shift
    with np.errstate(divide="ignore"):
        e = np.exp(s - m)
        l = e.sum(axis=-1, keepdims=True)
        lse = (m + np.log(l))[..., 0]                # log(0) = -inf for fully masked rows
    p = e / np.where(l > 0, l, 1.0)
    o = p @ _f64(v)
    return o.astype(q.dtype), lse.astype(q.dtype)


def attention_backward(q, k, v, o, lse, do, bias, is_causal: bool, scale: float):
    """dV = P^T dO; dP = dO V^T; dS = P (dP - D); dQ = scale dS K; dK = scale dS^T Q."""
    s = _scores(q, k, bias, is_causal, scale)
    lse64 = _f64(lse)[..., None]
    # NOTE: a fully masked row has lse = -inf; shifting by +inf instead makes every P = 0.
    p = np.exp(s - np.where(np.isneginf(lse64), np.inf, lse64))
    do64 = _f64(do)
    d = (do64 * _f64(o)).sum(axis=-1, keepdims=True)
    dv = np.swapaxes(p, 1, 2) @ do64
    dp = do64 @ np.swapaxes(_f64(v), 1, 2)
    ds = p * (dp - d)
    dq = scale * ds @ _f64(k)
    dk = scale * np.swapaxes(ds, 1, 2) @ _f64(q)
    dt = q.dtype
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --------------------------------------------------------------------------- optimizer
def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
              step: int, decoupled: bool) -> None:
    """One Adam / AdamW step in place (PyTorch's formulas)."""
    p, g = _f64(param), _f64(grad)
    m, v = _f64(exp_avg), _f64(exp_avg_sq)
    if decoupled:
        p = p * (1.0 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    p = p - lr / bc1 * m / (np.sqrt(v) / np.sqrt(bc2) + eps)
    param[...] = p
    exp_avg[...] = m
    exp_avg_sq[...] = v


# ------------------------------------------------------------------------------------------
# The primitives the CUDA backend runs as kernels (elementwise map/zip, reductions, matmul with
# transpose flags, gather/scatter, fill/arange, the dropout hash); the CPU backend gets these
# from NumPy directly, so they exist here as the oracle of tests/kernels/test_cuda_*.py.

GELU_C = math.sqrt(2.0 / math.pi)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * x ** 3)))


def _gelu_grad(x):
    t = np.tanh(GELU_C * (x + 0.044715 * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3 * 0.044715 * x * x)


UNARY = {
    "identity": lambda x: x.copy(),
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    "gelu": _gelu,
    "sign": np.sign,
    "square": np.square,
    "reciprocal": np.reciprocal,
}

BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum,
    "relu_backward": lambda x, g: np.where(x > 0, g, 0),
    "sigmoid_backward": lambda x, g: g * _sigmoid(x) * (1 - _sigmoid(x)),
    "tanh_backward": lambda x, g: g * (1 - np.tanh(x) ** 2),
    "gelu_backward": lambda x, g: g * _gelu_grad(x),
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
}


def unary(op, x):
    return UNARY[op](x)


def binary(op, a, b):
    return BINARY[op](a, b)


def where(cond, a, b):
    return np.where(cond, a, b)


def reduce(op, x, axes=None, keepdims=False):
    return getattr(np, op)(x, axis=axes, keepdims=keepdims)


def argmax(x, axis=-1, keepdims=False):
    return np.argmax(x, axis=axis, keepdims=keepdims)


def matmul(a, b, trans_a=False, trans_b=False):
    if trans_a:
        a = np.swapaxes(a, -1, -2)
    if trans_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def addmm(bias, a, b):
    """a @ b + bias (a Linear layer's forward)."""
    return np.matmul(a, b) + bias


def embedding_forward(weight, idx):
    return weight[idx]


def embedding_backward(dout, idx, num_embeddings):
    dw = np.zeros((num_embeddings, dout.shape[-1]), dtype=dout.dtype)
    np.add.at(dw, idx.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    return dw


# ---------------------------------------------------------------- kernels/cuda/array.py
def full(shape, value, dtype):
    return np.full(shape, value, dtype)


def arange(n, start, step, dtype):
    return (start + step * np.arange(n)).astype(dtype)


LOGICAL_UNARY = {"not": np.logical_not, "isfinite": np.isfinite}
LOGICAL_BINARY = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}


def take(x, idx):
    """``x[idx]`` (the oracle of index_linear + gather); ``idx`` a tuple of int arrays / slices."""
    return x[idx]


def put_add(shape, idx, src, dtype):
    """``np.add.at(zeros(shape), idx, src)`` (the oracle of index_linear + scatter(accumulate))."""
    out = np.zeros(shape, dtype)
    np.add.at(out, idx, src)
    return out


def index_extremes(idx, ignore=None):
    """``[min, max]`` of a non-empty int64 index array without the entries equal to ``ignore``;
    ``[INT64_MAX, INT64_MIN]`` when none is left (the oracle of cuda's index_extremes)."""
    kept = idx if ignore is None else idx[idx != ignore]
    info = np.iinfo(np.int64)
    return np.array([kept.min(), kept.max()] if kept.size else [info.max, info.min], np.int64)


def _fmix32(h):
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    return h ^ (h >> np.uint64(16))


def dropout_mask(shape, p, seed, dtype):
    i = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.uint64)
    m32 = np.uint64(0xFFFFFFFF)
    h = _fmix32((i & m32) ^ np.uint64(seed & 0xFFFFFFFF))
    h = _fmix32(h ^ (((i >> np.uint64(32)) + np.uint64((seed >> 32) & 0xFFFFFFFF)) & m32))
    u = h.astype(np.float64) * 2.3283064365386963e-10
    return np.where(u >= p, 1.0 / (1.0 - p), 0.0).astype(dtype).reshape(shape)
