"""kernels/cpu/parallel.py: one kernel compiled threaded and serial, the serial one run on one thread."""
import numba
import numpy as np
import pytest
from numba import prange

from minitrans.kernels.cpu.parallel import parallel_njit


def _row_sums(a, out):
    for i in prange(a.shape[0]):
        acc = 0.0
        for j in range(a.shape[1]):
            acc += a[i, j] * a[i, j]
        out[i] = acc


def test_serial_twin_runs_on_one_thread_and_agrees_bit_for_bit():
    kernel = parallel_njit()(_row_sums)
    a = np.random.default_rng(0).standard_normal((37, 11))
    expected = (a * a).sum(axis=1)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        out1 = np.empty(37)
        kernel(a, out1)
        assert kernel.serial.signatures and not kernel.threaded.signatures
        if numba.config.NUMBA_NUM_THREADS < 2:
            pytest.skip("Numba has one thread here: the threaded variant cannot be selected")
        numba.set_num_threads(2)
        out2 = np.empty(37)
        kernel(a, out2)
        assert kernel.threaded.signatures
    finally:
        numba.set_num_threads(old)
    np.testing.assert_allclose(out1, expected, rtol=1e-12)
    assert np.array_equal(out1, out2)


def test_twins_cache_under_different_names():
    kernel = parallel_njit(cache=False)(_row_sums)
    assert kernel.serial.py_func.__qualname__ == kernel.threaded.py_func.__qualname__ + "_serial"
    assert kernel.__name__ == "_row_sums" and kernel.__doc__ == _row_sums.__doc__


def test_parallel_option_is_refused():
    with pytest.raises(TypeError, match="parallel"):
        parallel_njit(parallel=True)
