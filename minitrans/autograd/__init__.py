"""Autograd: ``Function``, the backward engine, grad modes, gradcheck and anomaly detection."""
from .anomaly import detect_anomaly
from .function import Function
from .gradcheck import GradcheckError, gradcheck
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from . import engine as _engine


def backward(tensors, grad_tensors=None, retain_graph: bool = False) -> None:
    if not isinstance(tensors, (list, tuple)):
        tensors, grad_tensors = [tensors], [grad_tensors]
    grad_tensors = grad_tensors or [None] * len(tensors)
    for t, g in zip(tensors, grad_tensors):
        _engine.backward(t, g, retain_graph=True if len(tensors) > 1 else retain_graph)


__all__ = ["Function", "gradcheck", "GradcheckError", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "detect_anomaly", "backward"]
