"""The one place a ``dim`` argument is checked and made non-negative.

Every op that takes a dimension (``sum(dim=)``, ``transpose``, ``cat``, ``softmax`` ...) calls
:func:`normalize_dim`, so each accepts the same values and rejects the rest with the same message.
"""
from __future__ import annotations

from numbers import Integral


def normalize_dim(dim, ndim: int, who: str) -> int:
    """``dim`` as an index in ``[0, ndim)``, counting from the end when negative, as in PyTorch.

    A 0-d tensor accepts ``dim`` 0 and -1 (it is treated as having one dimension).
    Raises ``TypeError`` when ``dim`` is not an integer and ``IndexError`` naming ``who`` when it is
    out of range: ``"who: dim D is out of range for a tensor with N dimensions"``.
    """
    if type(dim) is not int:        # a plain int skips the (slow) abstract Integral check
        if not isinstance(dim, Integral):
            raise TypeError(f"{who}: dim must be an int, got {type(dim).__name__}")
        dim = int(dim)
    size = ndim if ndim > 0 else 1
    if not -size <= dim < size:
        raise IndexError(f"{who}: dim {dim} is out of range for a tensor with {ndim} dimensions")
    return dim % size
