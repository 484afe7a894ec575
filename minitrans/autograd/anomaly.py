"""``detect_anomaly()``: raise at the first op whose forward or backward makes NaN or Inf."""
from __future__ import annotations

import os
import traceback

from .grad_mode import STATE, StateSwitch

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class detect_anomaly(StateSwitch):
    """Context manager: check every op's output and every gradient for NaN/Inf.

    The error names the op and, for backward, the line of user code that created it.
    It costs one finiteness check per array, so use it for debugging only.
    """

    _field = "anomaly"

    def __init__(self, check_nan: bool = True) -> None:
        self.check_nan = self._value = check_nan


def _has_nan_or_inf(arr, xp) -> bool:
    return arr.dtype.kind == "f" and not bool(xp.all(xp.isfinite(arr)))


def creation_trace(skip: int = 2) -> str:
    """Where the op being applied was called from: the user's line first, then the recent stack."""
    stack = traceback.extract_stack()[:-skip]  # drop this function and Function.apply (and its callees)
    user = next((f for f in reversed(stack) if not os.path.abspath(f.filename).startswith(_PKG)), None)
    head = f"  {user.filename}:{user.lineno} in {user.name}: {user.line}\n" if user else ""
    return head + "".join(traceback.format_list(stack[-12:]))


def check_forward(name: str, out, xp) -> None:
    if _has_nan_or_inf(out, xp):
        raise RuntimeError(f"detect_anomaly: function '{name}' returned NaN or Inf values in its forward output. "
                           f"The op was called at:\n{creation_trace(3)}")


def check_backward(node, grads) -> None:
    for i, g in enumerate(grads):
        if g is not None and _has_nan_or_inf(g, node.xp):
            where = getattr(node, "_trace", "") or "(creation trace not recorded)"
            raise RuntimeError(
                f"detect_anomaly: function '{type(node).__name__}Backward' returned NaN or Inf values in its "
                f"gradient for input {i}. The op was created at:\n{where}")
