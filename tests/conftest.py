"""Hypothesis profiles: ``ci`` (default, small) and ``long`` (``MINITRANS_LONG=1``)."""
import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=10, **_COMMON)
settings.register_profile("long", max_examples=200, **_COMMON)
settings.load_profile("long" if os.environ.get("MINITRANS_LONG") == "1" else "ci")
