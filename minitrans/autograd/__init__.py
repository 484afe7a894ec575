"""Autograd: ``Function``, the backward engine, ``grad``, grad modes, gradcheck and anomaly detection.

Second-order gradients (double backward: Hessian-vector products, gradient penalties) are
not supported: backward passes run on raw arrays and are not themselves recorded, so
``create_graph=True`` raises ``NotImplementedError`` instead of returning a gradient that
silently has no graph.
"""
from .anomaly import detect_anomaly
from .function import Function
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from . import engine
from .api import backward, grad
# gradcheck builds tensors, so it comes after the modules the tensor class needs (engine, api)
from .gradcheck import GradcheckError, gradcheck

__all__ = ["Function", "gradcheck", "GradcheckError", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "detect_anomaly", "backward", "grad"]
