"""The one text of an index-range error, raised by every device's ``check_index_range`` (eagerly
on the CPU, at the next host read on a GPU), so the message never depends on the device."""
from __future__ import annotations


def index_range_error(what: str, n: int, lo: int, hi: int, ignore=None):
    """The IndexError for indices whose extremes are ``lo`` / ``hi`` when they must be in [0, n),
    or None when they are (``lo > hi``: nothing was checked). With ``ignore`` (a loss's class
    targets and ``ignore_index``) the text names target values. One text on every device."""
    lo, hi = int(lo), int(hi)
    if lo > hi or (lo >= 0 and hi < n):
        return None
    if ignore is None:
        return IndexError(f"{what}: index out of range: indices must be in [0, {n}), got min {lo}, max {hi}")
    return IndexError(f"{what}: target values must be in [0, {n}) or ignore_index={ignore}; "
                      f"found {lo if lo < 0 else hi}")
