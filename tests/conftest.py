"""Hypothesis profiles: ``ci`` (default, small) and ``long`` (``MINITRANS_LONG=1``).

The CUDA tests run in Numba's simulator unless the caller says otherwise: on a machine
with a GPU, ``NUMBA_ENABLE_CUDASIM=0 python -m pytest tests/cuda tests/kernels`` runs them
on the device. Set here, before anything imports numba.
"""
import os
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if os.environ["NUMBA_ENABLE_CUDASIM"] == "1":
    # The simulator runs each CUDA thread as a Python thread and polls them from the launching
    # thread; at the default 5 ms GIL switch interval every hand-over (a barrier, a finished
    # thread) waits out a slice: a training step of the tests' encoder-decoder took 29 s, with
    # 50 µs slices 1.5 s. Only the interpreter's thread switching changes, not what runs.
    sys.setswitchinterval(5e-5)
    # ... which also makes the simulator's unlocked first allocation of a shared array race:
    try:
        from minitrans.kernels.cuda.simulator import make_shared_arrays_thread_safe

        make_shared_arrays_thread_safe()
    except ImportError:  # numba-cuda (the cuda extra) is not installed: no simulator to mend
        pass

from hypothesis import HealthCheck, settings

# function_scoped_fixture: the ``device`` fixture below is one value for every example of a test
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=10, **_COMMON)
settings.register_profile("long", max_examples=200, **_COMMON)
settings.load_profile("long" if os.environ.get("MINITRANS_LONG") == "1" else "ci")


# ----------------------------------------------------------------------------- every backend
import importlib.util  # noqa: E402

import pytest  # noqa: E402

#: The device types a test parametrised with the ``device`` fixture runs on. ``cuda`` runs in
#: Numba's CUDA simulator unless ``NUMBA_ENABLE_CUDASIM=0`` and a GPU are there; it is skipped
#: only where the optional ``numba-cuda`` package is not installed (a CPU-only install).
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        importlib.util.find_spec("numba_cuda") is None,
        reason="device 'cuda' needs numba-cuda: pip install 'minitrans[cuda]'")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device type under test (``"cpu"`` or ``"cuda"``). Under the simulator the CUDA
    kernels run with the small tiles of ``minitrans.kernels.cuda.simulator`` (one Python thread
    per CUDA thread), restored after the test."""
    if request.param == "cuda":
        from numba import config

        if config.ENABLE_CUDASIM:
            from minitrans.kernels.cuda import simulator

            with simulator.small_tiles():
                yield "cuda"
            return
    yield request.param


@pytest.fixture(autouse=True)
def no_pending_cuda_index_checks_left_behind():
    """On cuda an index-range check raises at the next host read; a test that queued a failing
    one and read nothing must not fail the next test, so each test ends with none pending."""
    yield
    pending = sys.modules.get("minitrans.backends.cuda.pending_checks")
    if pending is not None:
        pending.PENDING.discard()
