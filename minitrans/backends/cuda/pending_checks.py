"""Index-range checks that never make the host wait inside a step.

PyTorch checks embedding indices and loss targets on a GPU with device-side asserts that
surface at the next synchronisation; this is the same design without a sticky error. A check
(``PENDING.add``) launches the extremes kernel (``kernels/cuda/index_range.py``), which writes
``[min, max]`` of the index array into one slot of a small int64 device buffer, and the host
only records what that slot means (the bound ``n``, the name for the message, ``ignore``).
Nothing is read back then. At the next read the user asks for (``to_numpy``, under ``.item()``
/ ``.numpy()`` / ``tolist``) ``raise_first_violation`` copies every used slot back in ONE
transfer, forgets them, and raises the IndexError the CPU raises eagerly
(``protocol.index_range_error``) for the first check that failed. Until then the kernels that
use the indices skip out-of-range ones (a gather reads 0, a scatter writes nothing, a
cross-entropy row with a bad target gives NaN), so nothing reads or writes out of bounds.

After ``SLOTS`` checks without a host read the buffer is read early (one host wait per
``SLOTS`` checks); a training step makes a handful.
"""
from __future__ import annotations

import numpy as np

from ...kernels.cuda._util import counters, device_array
from ...kernels.cuda.index_range import index_extremes
from ..protocol import index_range_error

SLOTS = 64  # checks recorded before the buffer must be read back


class PendingChecks:
    """The pending index-range checks of one process (see the module docstring)."""

    def __init__(self) -> None:
        self._extremes = None  # (SLOTS, 2) int64 device array, allocated at the first check
        self._meanings = []  # one (n, what, ignore) per used slot, slot i at position i

    def __len__(self) -> int:
        return len(self._meanings)

    def add(self, flat_idx, n: int, what: str, ignore=None) -> None:
        """Queue the check that every entry of the non-empty 1-D C-contiguous int64 device array
        ``flat_idx`` other than ``ignore`` is in [0, n); one kernel launch, no host wait."""
        if len(self._meanings) == SLOTS:
            self.raise_first_violation()
        if self._extremes is None:
            self._extremes = device_array((SLOTS, 2), np.int64)
        index_extremes(flat_idx, ignore, out=self._extremes[len(self._meanings)])
        self._meanings.append((int(n), what, ignore))

    def raise_first_violation(self) -> None:
        """Read every pending slot back in one transfer and forget them; raise the IndexError of
        the first check whose indices were out of range (none pending: no transfer)."""
        if not self._meanings:
            return
        meanings, self._meanings = self._meanings, []
        counters.syncs += 1  # the host waits for the device: the copy follows all queued work
        extremes = self._extremes[:len(meanings)].copy_to_host()
        for (n, what, ignore), (lo, hi) in zip(meanings, extremes):
            error = index_range_error(what, n, lo, hi, ignore)
            if error is not None:
                raise error

    def discard(self) -> None:
        """Forget the pending checks without reading them (a test isolating itself from an
        earlier one that never read its result)."""
        self._meanings = []


#: the process's pending checks (one CUDA device, one stream: kernels run in launch order)
PENDING = PendingChecks()
