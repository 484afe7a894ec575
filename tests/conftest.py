"""Hypothesis profiles: ``ci`` (default, small) and ``long`` (``MINITRANS_LONG=1``).

The CUDA tests run in Numba's simulator unless the caller says otherwise: on a machine
with a GPU, ``NUMBA_ENABLE_CUDASIM=0 python -m pytest tests/cuda tests/kernels`` runs them
on the device. Set here, before anything imports numba.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=10, **_COMMON)
settings.register_profile("long", max_examples=200, **_COMMON)
settings.load_profile("long" if os.environ.get("MINITRANS_LONG") == "1" else "ci")
