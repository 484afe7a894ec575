"""How many threads minitrans's CPU work uses: the one place that decides it, and only when asked.

Two pools do minitrans's CPU work: Numba's (the ``prange`` kernels: softmax, LayerNorm,
cross-entropy, attention, Adam) and the OpenBLAS that NumPy loaded (every matmul). PyTorch
users set one number with ``torch.set_num_threads``; here the same call sets both pools:

    import minitrans as mt
    mt.set_num_threads(1)              # Numba and OpenBLAS on one thread
    mt.get_num_threads()               # -> 1
    with mt.num_threads(2):            # temporarily, restored on exit
        ...

Nothing in minitrans changes a thread count, a Numba setting or an environment variable by
itself: not importing it, not running a kernel. Without a call, each pool keeps what its own
environment variables say (``NUMBA_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``;
by default one thread per core).

**BLAS threads inside minitrans's own parallel kernels.** The tiled attention kernels
(``kernels/cpu/attention.py``) and the large matrix products (``kernels/cpu/matmul.py``) can run
their blocks on up to ``get_num_threads()`` Python threads of one shared pool (:func:`worker_pool`),
each block a BLAS call. That only pays when each of those calls runs on one OpenBLAS thread — the
two levels of threading would otherwise multiply, and OpenBLAS's idle workers spin — so the kernels
split their work only while OpenBLAS is on one thread (:func:`blas_is_single_threaded`), and otherwise
run it on the calling thread and leave the parallelism to OpenBLAS. They never change OpenBLAS's
count themselves. For training on several cores, ask for the fast setting explicitly:

    mt.set_num_threads(2)
    mt.threads.set_blas_num_threads(1)     # minitrans splits the large products itself
    # or, for a block of code only:
    with mt.threads.limit_blas_threads(1):
        ...

OpenBLAS's count is process-wide: it also applies to NumPy calls of the rest of the program.

Numba's *threading layer* (which library runs its pool) is also left to Numba unless you choose
it. The choice matters on a machine with few cores: Numba's OpenMP layer (its default when TBB is
not installed) keeps its threads spinning for a while after each parallel kernel, and an OpenBLAS
matmul that follows at once then competes with them for the cores. ``set_threading_layer
("workqueue")`` — or ``NUMBA_THREADING_LAYER=workqueue`` in the environment — picks Numba's
own non-spinning pool (on one thread the CPU row kernels run their serial versions on the calling
thread, ``kernels/cpu/parallel.py``, so no kernel waits for a pool thread there); it must be called before the
first parallel kernel runs (Numba starts its pool once per process), and before ``set_num_threads``,
which starts the pool. The benchmarks and training scripts in ``experiments/`` make these choices
explicitly; ``docs/performance.md`` has the measurements behind them.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy  # noqa: F401  (loads its BLAS, which _openblas looks for)
from numba.np.ufunc import parallel as numba_parallel

__all__ = ["set_num_threads", "get_num_threads", "num_threads", "set_threading_layer", "threading_layer",
           "get_blas_num_threads", "set_blas_num_threads", "limit_blas_threads", "blas_is_single_threaded",
           "worker_pool"]

LAYERS = ("default", "safe", "forksafe", "threadsafe", "workqueue", "omp", "tbb")
# the (get, set) symbol pairs of OpenBLAS builds: SciPy's wheels (NumPy's), 64-bit-int builds, plain
_OPENBLAS_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                     ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                     ("openblas_get_num_threads", "openblas_set_num_threads"))
_OPENBLAS: list = []          # [(get, set) or None], found on first use


def _openblas():
    """(get, set) of the OpenBLAS that NumPy loaded (found among the libraries mapped into this
    process), or None. Looking changes nothing: the library is already loaded."""
    if not _OPENBLAS:
        found = None
        try:
            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
            for path in paths:
                lib = ctypes.CDLL(path)
                for get, set_ in _OPENBLAS_SYMBOLS:
                    if hasattr(lib, get) and hasattr(lib, set_):
                        getattr(lib, set_).argtypes = [ctypes.c_int]
                        found = (getattr(lib, get), getattr(lib, set_))
                        break
                if found:
                    break
        except OSError:
            pass
        _OPENBLAS.append(found)
    return _OPENBLAS[0]


def _check_count(n, what: str, limit: int | None) -> int:
    """``n`` as an int in [1, limit] (no upper limit when ``limit`` is None), or a TypeError / ValueError."""
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"{what}(): the number of threads must be an int, got {type(n).__name__}")
    n = int(n.__index__())
    if limit is None and n < 1:
        raise ValueError(f"{what}(): the number of threads must be at least 1, got {n}")
    if limit is not None and not 1 <= n <= limit:
        raise ValueError(f"{what}(): the number of threads must be between 1 and {limit} (Numba's pool size, "
                         f"NUMBA_NUM_THREADS), got {n}")
    return n


def _check_numba_count(n, what: str) -> int:
    return _check_count(n, what, numba.config.NUMBA_NUM_THREADS)


def get_blas_num_threads() -> int | None:
    """OpenBLAS's current thread count, or None when NumPy's BLAS is not an OpenBLAS this can reach."""
    blas = _openblas()
    return None if blas is None else int(blas[0]())


def _set_blas(n: int) -> None:
    blas = _openblas()
    if blas is not None:
        blas[1](n)


def set_blas_num_threads(n: int) -> None:
    """Run NumPy's OpenBLAS on ``n`` threads (process-wide; a no-op where NumPy's BLAS is not an
    OpenBLAS this can reach). ``set_blas_num_threads(1)`` after ``set_num_threads(k)`` lets the CPU
    kernels split large products and attention tiles over their own ``k`` threads."""
    _set_blas(_check_count(n, "set_blas_num_threads", None))


def blas_is_single_threaded() -> bool:
    """True while OpenBLAS runs on one thread (or is out of reach): the CPU kernels then may run
    BLAS calls on several threads of their own without the two levels of threading multiplying."""
    return get_blas_num_threads() in (1, None)


@contextmanager
def limit_blas_threads(n: int = 1):
    """Within the block, OpenBLAS on ``n`` threads; on exit, the count it had before. The count is
    process-wide, so other threads of the program see it too while the block runs."""
    n = _check_count(n, "limit_blas_threads", None)
    before = get_blas_num_threads()
    _set_blas(n)
    try:
        yield n
    finally:
        if before is not None:
            _set_blas(before)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for minitrans's CPU work: Numba's kernels and NumPy's OpenBLAS (like
    ``torch.set_num_threads``). ``n`` must be between 1 and Numba's pool size (NUMBA_NUM_THREADS)."""
    n = _check_numba_count(n, "set_num_threads")
    numba.set_num_threads(n)
    _set_blas(n)


def get_num_threads() -> int:
    """The number of threads minitrans's CPU kernels use (Numba's current count)."""
    return int(numba.get_num_threads())


@contextmanager
def num_threads(n: int):
    """Within the block, :func:`set_num_threads` (n); on exit both pools get their previous counts back."""
    n = _check_numba_count(n, "num_threads")
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
    if not numba_parallel._is_initialized:
        return None
    return numba.threading_layer()


def set_threading_layer(name: str) -> None:
    """Choose Numba's threading layer (``"workqueue"``, ``"omp"``, ``"tbb"``, or one of Numba's
    selectors ``"default"``, ``"safe"``, ``"forksafe"``, ``"threadsafe"``). Must come before Numba's
    pool starts: the first parallel kernel, ``set_num_threads`` or ``num_threads``. Asking again for
    the layer already running is allowed; asking for another one then raises RuntimeError."""
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
