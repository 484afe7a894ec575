"""Global switch for graph recording: ``no_grad()`` / ``enable_grad()`` (context managers and decorators)."""
from __future__ import annotations

import functools


class _State:
    enabled = True
    anomaly = False


STATE = _State()


def is_grad_enabled() -> bool:
    return STATE.enabled


class StateSwitch:
    """Set the ``STATE`` field named ``_field`` to ``_value`` inside a ``with`` block, and put the
    previous value back on leaving it."""

    _field = "enabled"
    _value = True

    def __enter__(self):
        self._prev = getattr(STATE, self._field)
        setattr(STATE, self._field, self._value)
        return self

    def __exit__(self, *exc):
        setattr(STATE, self._field, self._prev)
        return False


class _GradMode(StateSwitch):
    """A grad-mode switch, usable as a ``with`` block or as a decorator."""

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Inside this block ops record no graph and results have ``requires_grad=False``."""

    _value = False


class enable_grad(_GradMode):
    """Turn graph recording back on inside a ``no_grad`` block."""

    _value = True


class set_grad_enabled(_GradMode):
    """``set_grad_enabled(False)`` as a context manager, or as a call that sets the mode."""

    def __init__(self, mode: bool) -> None:
        self._value = bool(mode)
        self._prev = STATE.enabled
        STATE.enabled = self._value  # as in PyTorch, the call itself already sets the mode

    def __enter__(self):
        return self
