"""Index-range checks that never make the host wait inside a step.

PyTorch checks embedding indices and loss targets on a GPU with device-side asserts that
surface at the next synchronisation; this is the same design without a sticky error. A check
(``PENDING.add``) launches the extremes kernel (``kernels/cuda/index_range.py``), which writes
``[min, max]`` of the index array into one slot of a small int64 device buffer, and the host
only records what that slot means (the bound ``n``, the name for the message, ``ignore``).
Nothing is read back then. At the next read the user asks for (``to_numpy``, under ``.item()``
/ ``.numpy()`` / ``tolist``) every used slot is copied back, the slots are forgotten, and the
first check that failed raises the IndexError the CPU raises eagerly
(``index_errors.index_range_error``). A small read (at most ``VALUE_BYTES``: ``.item()``) travels
in the SAME transfer (``read_along``: one device copy of the value in front of the slots, one
host wait in all); a larger one takes one more transfer (``raise_first_violation``). Until then the kernels that
use the indices skip out-of-range ones (a gather reads 0, a scatter writes nothing, a
cross-entropy row with a bad target gives NaN), so nothing reads or writes out of bounds.

After ``SLOTS`` checks without a host read the buffer is read early (one host wait per
``SLOTS`` checks); a training step makes a handful.
"""
from __future__ import annotations

import numpy as np

from ...kernels.cuda._util import counters, device_array
from ...kernels.cuda.array import copy_into
from ...kernels.cuda.index_range import index_extremes
from ..index_errors import index_range_error

SLOTS = 64  # checks recorded before the buffer must be read back
VALUE_BYTES = 64  # reads this small travel with the slots: the buffer's first VALUE_BYTES bytes
_VALUE_WORDS = VALUE_BYTES // 8


class PendingChecks:
    """The pending index-range checks of one process (see the module docstring)."""

    def __init__(self) -> None:
        # int64 device buffer, allocated at the first check: a value area of VALUE_BYTES, then
        # [min, max] of slot i at words _VALUE_WORDS + 2i and + 2i + 1
        self._words = None
        self._meanings = []  # one (n, what, ignore) per used slot, slot i at position i

    def __len__(self) -> int:
        return len(self._meanings)

    def add(self, flat_idx, n: int, what: str, ignore=None) -> None:
        """Queue the check that every entry of the non-empty 1-D C-contiguous int64 device array
        ``flat_idx`` other than ``ignore`` is in [0, n); one kernel launch, no host wait."""
        if len(self._meanings) == SLOTS:
            self.raise_first_violation()
        if self._words is None:
            self._words = device_array((_VALUE_WORDS + 2 * SLOTS,), np.int64)
        first = _VALUE_WORDS + 2 * len(self._meanings)
        index_extremes(flat_idx, ignore, out=self._words[first:first + 2])
        self._meanings.append((int(n), what, ignore))

    def raise_first_violation(self) -> None:
        """Read every pending slot back in one transfer and forget them; raise the IndexError of
        the first check whose indices were out of range (none pending: no transfer)."""
        if self._meanings:
            self._read(_VALUE_WORDS)

    def read_along(self, flat):
        """The host copy of the 1-D C-contiguous device array ``flat`` (at most VALUE_BYTES,
        checks pending) read in the same transfer as the pending slots: the checks' IndexError
        if one failed, else ``flat``'s values."""
        nbytes = flat.shape[0] * flat.dtype.itemsize
        copy_into(self._words[:_VALUE_WORDS].view(np.uint8)[:nbytes].view(flat.dtype), flat)
        host = self._read(0)
        return host.view(np.uint8)[:nbytes].view(flat.dtype).copy()

    def _read(self, start: int):
        """Copy words [start, end of the used slots) to the host (one host wait), forget the
        checks, raise the first failed one; return the words before the slots."""
        meanings, self._meanings = self._meanings, []
        counters.syncs += 1  # the host waits for the device: the copy follows all queued work
        host = self._words[start:_VALUE_WORDS + 2 * len(meanings)].copy_to_host()
        extremes = host[_VALUE_WORDS - start:].reshape(-1, 2)
        for (n, what, ignore), (lo, hi) in zip(meanings, extremes):
            error = index_range_error(what, n, lo, hi, ignore)
            if error is not None:
                raise error
        return host[:_VALUE_WORDS - start]

    def discard(self) -> None:
        """Forget the pending checks without reading them (a test isolating itself from an
        earlier one that never read its result)."""
        self._meanings = []


#: the process's pending checks (one CUDA device, one stream: kernels run in launch order)
PENDING = PendingChecks()
