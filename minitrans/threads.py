"""How many threads minitrans's CPU work uses: the one place that decides it.

Two pools do minitrans's CPU work: Numba's (the ``prange`` kernels: softmax, LayerNorm,
cross-entropy, attention, Adam) and the OpenBLAS that NumPy loaded (every matmul). PyTorch
users set one number with ``torch.set_num_threads``; here the same call sets both pools:

    import minitrans as mt
    mt.set_num_threads(1)              # Numba and OpenBLAS on one thread
    mt.get_num_threads()               # -> 1
    with mt.num_threads(2):            # temporarily, restored on exit
        ...

Importing minitrans changes no thread count and no Numba setting. Without a call, each pool
keeps what its own environment variables say (``NUMBA_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``; by default one thread per core).

Numba's *threading layer* (which library runs its pool) is also left to Numba unless you choose
it. The choice matters on a machine with few cores: Numba's OpenMP layer (its default when TBB is
not installed) keeps its threads spinning for a while after each parallel kernel, and an OpenBLAS
matmul that follows at once then competes with them for the cores. ``set_threading_layer
("workqueue")`` — or ``NUMBA_THREADING_LAYER=workqueue`` in the environment — picks Numba's
own non-spinning pool (on one thread ``"omp"`` is faster: its calling thread runs the kernel itself,
where ``workqueue`` hands every kernel to a pool thread and waits); it must be called before the
first parallel kernel runs (Numba starts its
pool once per process), and before ``set_num_threads``, which starts the pool. The benchmarks and
training scripts in ``experiments/`` make this choice explicitly; ``docs/performance.md`` has the
measurements behind it.

The tiled attention kernels (``kernels/cpu/attention.py``) and the large matrix products
(``kernels/cpu/matmul.py``) run their blocks on up to ``get_num_threads()`` Python threads of one
shared pool (:func:`worker_pool`) and keep OpenBLAS on one thread while they do
(:func:`blas_single_threaded`), so the two levels of threading do not multiply, and nothing spins
waiting for work when the cores are busy elsewhere.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

__all__ = ["set_num_threads", "get_num_threads", "num_threads", "set_threading_layer", "threading_layer",
           "get_blas_num_threads", "blas_single_threaded", "worker_pool"]

LAYERS = ("default", "safe", "forksafe", "threadsafe", "workqueue", "omp", "tbb")
_BLAS: list = []          # [(get, set) or None], found on first use


def _openblas():
    """(get, set) of the OpenBLAS that NumPy loaded (found in /proc/self/maps), or None."""
    if not _BLAS:
        found = None
        try:
            import numpy  # noqa: F401  (loads its BLAS)

            with open("/proc/self/maps") as f:
                paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower()})
            for path in paths:
                lib = ctypes.CDLL(path)
                for get, set_ in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                                  ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                                  ("openblas_get_num_threads", "openblas_set_num_threads")):
                    if hasattr(lib, get) and hasattr(lib, set_):
                        getattr(lib, set_).argtypes = [ctypes.c_int]
                        found = (getattr(lib, get), getattr(lib, set_))
                        break
                if found:
                    break
        except OSError:
            pass
        _BLAS.append(found)
    return _BLAS[0]


def _check_count(n, what: str = "set_num_threads") -> int:
    import numba

    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"{what}(): the number of threads must be an int, got {type(n).__name__}")
    n = int(n.__index__())
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(f"{what}(): the number of threads must be between 1 and {limit} (Numba's pool size, "
                         f"NUMBA_NUM_THREADS), got {n}")
    return n


def get_blas_num_threads() -> int | None:
    """OpenBLAS's current thread count, or None when NumPy's BLAS is not an OpenBLAS this can reach."""
    blas = _openblas()
    return None if blas is None else int(blas[0]())


def _set_blas(n: int) -> None:
    blas = _openblas()
    if blas is not None:
        blas[1](n)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for minitrans's CPU work: Numba's kernels and NumPy's OpenBLAS (like
    ``torch.set_num_threads``). ``n`` must be between 1 and Numba's pool size (NUMBA_NUM_THREADS)."""
    import numba

    n = _check_count(n)
    numba.set_num_threads(n)
    _set_blas(n)


def get_num_threads() -> int:
    """The number of threads minitrans's CPU kernels use (Numba's current count)."""
    import numba

    return int(numba.get_num_threads())


@contextmanager
def num_threads(n: int):
    """Within the block, :func:`set_num_threads` (n); on exit both pools get their previous counts back."""
    import numba

    n = _check_count(n, "num_threads")
    before_numba, before_blas = numba.get_num_threads(), get_blas_num_threads()
    set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(before_numba)
        if before_blas is not None:
            _set_blas(before_blas)


def threading_layer() -> str | None:
    """The Numba threading layer in use, or None while Numba's pool has not started."""
    import numba
    from numba.np.ufunc import parallel

    if not parallel._is_initialized:
        return None
    return numba.threading_layer()


def set_threading_layer(name: str) -> None:
    """Choose Numba's threading layer (``"workqueue"``, ``"omp"``, ``"tbb"``, or one of Numba's
    selectors ``"default"``, ``"safe"``, ``"forksafe"``, ``"threadsafe"``). Must come before Numba's
    pool starts: the first parallel kernel, ``set_num_threads`` or ``num_threads``. Asking again for
    the layer already running is allowed; asking for another one then raises RuntimeError."""
    import numba

    if not isinstance(name, str) or name not in LAYERS:
        raise ValueError(f"set_threading_layer(): unknown threading layer {name!r}; choose one of {LAYERS}")
    running = threading_layer()
    if running is not None:
        if running == name:
            return
        raise RuntimeError(f"set_threading_layer({name!r}): Numba's pool already runs on the {running!r} layer "
                           "and cannot change within a process; call it before the first parallel kernel, "
                           "or set NUMBA_THREADING_LAYER in the environment")
    numba.config.THREADING_LAYER = name


_BLAS_LOCK = threading.Lock()
_BLAS_STATE = {"users": 0, "before": 1}


@contextmanager
def blas_single_threaded():
    """OpenBLAS on one thread within the block, for code that runs BLAS calls on several threads of its
    own. Reference-counted: overlapping blocks restore the previous count once, when the last one exits."""
    blas = _openblas()
    if blas is None:
        yield
        return
    get, set_ = blas
    with _BLAS_LOCK:
        if _BLAS_STATE["users"] == 0:
            _BLAS_STATE["before"] = get()
            set_(1)
        _BLAS_STATE["users"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["users"] -= 1
            if _BLAS_STATE["users"] == 0:
                set_(_BLAS_STATE["before"])


_POOL: list = [None]
_POOL_LOCK = threading.Lock()


def worker_pool(n: int) -> ThreadPoolExecutor:
    """The shared pool of at least ``n`` threads (named ``minitrans-worker-*``) that the CPU kernels hand
    blocks to; created on first use and grown when a larger count is asked for. Its threads block
    (they do not spin) while there is no work."""
    with _POOL_LOCK:
        pool = _POOL[0]
        if pool is None or pool._max_workers < n:
            _POOL[0] = pool = ThreadPoolExecutor(max(1, n), thread_name_prefix="minitrans-worker")
        return pool
