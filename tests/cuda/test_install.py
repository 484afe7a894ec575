"""A CPU-only install (no numba-cuda) imports and computes; asking it for device ``cuda``
gives one line saying what to install. The missing package is simulated in a fresh
interpreter: ``sys.modules['numba_cuda'] = None`` makes both ``import numba_cuda`` and
``importlib.util.find_spec('numba_cuda')`` behave as if it were not installed."""
import os
import subprocess
import sys

import pytest

_SCRIPT = r"""
import sys
sys.modules["numba_cuda"] = None
import numpy as np
import minitrans as mt
x = mt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
(x * x).sum().backward()
assert np.array_equal(x.grad.numpy(), 2 * np.arange(6.0).reshape(2, 3)), x.grad
assert mt.cuda.is_available() is False
try:
    mt.zeros(2, device="cuda")
except RuntimeError as e:
    print("ERR:" + str(e))
else:
    print("NO ERROR")
"""


@pytest.mark.parametrize("sim", ["0", "1"])
def test_cpu_only_install_works_and_cuda_says_what_to_install(sim):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM=sim)
    r = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("ERR:")]
    assert len(lines) == 1, r.stdout
    assert "pip install 'minitrans[cuda]'" in lines[0]
    assert "\n" not in lines[0]
