import os

import numpy as np
import pytest

# The CUDA kernel tests run on Numba's simulator unless a real device is asked for;
# this must happen before numba is first imported, whatever the collection order.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


@pytest.fixture
def rng(request):
    """One generator per test, seeded from its name through Python's randomised string hash: fresh inputs every run."""
    return np.random.default_rng(abs(hash(request.node.name)) % 2**32)
