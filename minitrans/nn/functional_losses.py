"""The functional forms of the losses: cross-entropy, negative log-likelihood, MSE, L1 and
binary cross-entropy with logits, with PyTorch's reductions. Part of ``minitrans.nn.functional``
(import from there)."""
from __future__ import annotations

import numpy as np

from .. import _dtype
from ..ops import nn as nn_ops
from ..tensor import Tensor
from .functional_base import _need_float, _need_tensor, log_softmax


def _check_reduction(name: str, reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _class_target(name: str, input: Tensor, target: Tensor, ignore_index: int, weight):
    """Validate (N, C, d1, ...) scores against int64 class indices (N, d1, ...); returns (input, target)
    with a (C,) input and () target promoted to a batch of one."""
    _need_float(input, name)
    _need_tensor(target, name, "target")
    if target.dtype is not _dtype.int64:
        raise TypeError(f"{name}: target must be int64 class indices, got dtype {target.dtype}")
    if target.device != input.device:
        raise RuntimeError(f"{name}: target is on {target.device} but input is on {input.device}")
    if input.ndim == 1:
        input, target = input.unsqueeze(0), target.reshape(1)
    if input.ndim < 2:
        raise ValueError(f"{name}: input must be (N, C) or (N, C, d1, ...), got shape {tuple(input.shape)}")
    expect = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expect:
        raise ValueError(f"{name}: input of shape {tuple(input.shape)} needs target of shape {expect}, "
                         f"got {tuple(target.shape)}")
    C = input.shape[1]
    if weight is not None:
        _need_float(weight, name, "weight")
        if tuple(weight.shape) != (C,):
            raise ValueError(f"{name}: weight must have shape ({C},) (one per class), got {tuple(weight.shape)}")
        if weight.device != input.device:
            raise RuntimeError(f"{name}: weight is on {weight.device} but input is on {input.device}")
    # checked on every device: eagerly on the CPU; on a GPU one launch and nothing read back until
    # the next host read, where a bad target raises this same IndexError
    input.device.backend.check_index_range(target._data, C, name, ignore_index)
    return input, target


def _classes_last(input: Tensor) -> Tensor:
    """(N, C, d1, ...) -> (N·d1·..., C) rows."""
    if input.ndim > 2:
        input = input.permute(0, *range(2, input.ndim), 1)
    return input.reshape(-1, input.shape[-1])


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
                  ignore_index: int = -100, reduce=None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Fused log-softmax + negative log-likelihood. input (N, C) or (N, C, d1, ...), target int64 (N, d1, ...).
    A per-class ``weight`` runs the composed log_softmax + nll_loss path, with PyTorch's weighted mean."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    input, target = _class_target("cross_entropy", input, target, ignore_index, weight)
    if weight is not None:
        return _weighted_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    rows = _classes_last(input)
    out = nn_ops.CrossEntropy.apply(rows, target._data.reshape(-1), ignore_index, float(label_smoothing), reduction)
    return out.reshape(*target.shape) if reduction == "none" else out


def _weighted_cross_entropy(input, target, weight, ignore_index, reduction, eps):
    logp = log_softmax(input, 1)
    nll = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if eps == 0.0:
        return nll
    C = input.shape[1]
    keep = Tensor._wrap((target._data != ignore_index).astype(input._data.dtype), input.device)
    wshape = (1, C) + (1,) * (input.ndim - 2)
    smooth = -(logp * weight.reshape(*wshape)).sum(1) * keep                 # (N, d1, ...)
    if reduction == "sum":
        smooth = smooth.sum()
    elif reduction == "mean":
        smooth = smooth.sum() / _picked_weight(weight, target, ignore_index).sum()
    return nll * (1.0 - eps) + smooth * (eps / C)


def _picked_weight(weight: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """weight[target] with 0 at ignored positions (shape of target)."""
    xp = target.device.backend
    t = target._data
    keep = t != ignore_index
    w = weight[xp.where(keep, t, 0)]
    return w * Tensor._wrap(keep.astype(w._data.dtype), target.device)


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` pair, mapped onto ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
             ignore_index: int = -100, reduce=None, reduction: str = "mean") -> Tensor:
    """−weight[t]·input[i, t] for t = target[i], averaged over the weights of the targets kept;
    ``input`` holds log-probabilities, (N, C) or (N, C, d1, ...)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("nll_loss", reduction)
    input, target = _class_target("nll_loss", input, target, ignore_index, weight)
    xp = input.device.backend
    rows = _classes_last(input)
    t = target._data.reshape(-1)
    keep = t != ignore_index
    picked = rows[xp.arange(t.shape[0]), xp.where(keep, t, 0)]
    w = (Tensor._wrap(keep.astype(input._data.dtype), input.device) if weight is None
         else _picked_weight(weight, target.reshape(-1), ignore_index))
    losses = -(picked * w)
    if reduction == "none":
        return losses.reshape(*target.shape)
    total = losses.sum()
    if reduction == "sum":
        return total
    return total / w.sum()


def _pointwise_pair(name: str, input: Tensor, target: Tensor) -> None:
    _need_float(input, name)
    _need_tensor(target, name, "target")
    if target.device != input.device:
        raise RuntimeError(f"{name}: target is on {target.device} but input is on {input.device}")
    try:
        np.broadcast_shapes(tuple(input.shape), tuple(target.shape))
    except ValueError:
        raise ValueError(f"{name}: input of shape {tuple(input.shape)} and target of shape "
                         f"{tuple(target.shape)} cannot be broadcast together") from None


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    return loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """(input − target)², averaged or summed."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("mse_loss", reduction)
    _pointwise_pair("mse_loss", input, target)
    d = input - target
    return _reduce(d * d, reduction)


def l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """|input − target|, averaged or summed."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("l1_loss", reduction)
    _pointwise_pair("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     size_average=None, reduce=None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """−w·[p·y·log σ(x) + (1 − y)·log(1 − σ(x))] in the stable form
    (1 − y)·x + (1 + (p − 1)·y)·softplus(−x), softplus(−x) = log(1 + e^(−|x|)) + max(−x, 0)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    _pointwise_pair("binary_cross_entropy_with_logits", input, target)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"binary_cross_entropy_with_logits: target size {tuple(target.shape)} must be the same as "
                         f"input size {tuple(input.shape)}")
    softplus_neg = (1.0 + (-input.abs()).exp()).log() + (-input).relu()
    if pos_weight is None:
        loss = (1.0 - target) * input + softplus_neg
    else:
        loss = (1.0 - target) * input + (1.0 + (pos_weight - 1.0) * target) * softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
