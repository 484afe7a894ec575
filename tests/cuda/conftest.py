"""The CUDA backend tests run on Numba's CUDA simulator unless a real device is asked for.

The environment variable must be set before numba is first imported, whatever the
collection order. Tiles and thread counts are shrunk (``minitrans.kernels.cuda.simulator``:
the simulator runs one Python thread per CUDA thread) for the duration of each test module
and restored afterwards.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def small_tiles():
    from numba import config

    if not config.ENABLE_CUDASIM:  # a real GPU: keep the production tiles
        yield
        return
    from minitrans.kernels.cuda import simulator

    with simulator.small_tiles():
        yield


@pytest.fixture(autouse=True)
def no_pending_index_checks_left_behind():
    """Index-range checks on cuda raise at the next host read; a test that queued a failing one
    and never read anything must not make the next test fail, so each test ends with none."""
    yield
    from minitrans.backends.cuda.pending_checks import PENDING

    PENDING.discard()
