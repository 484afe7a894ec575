"""The CUDA backend tests run on Numba's CUDA simulator unless a real device is asked for.

The environment variable must be set before numba is first imported, whatever the
collection order. Tiles and thread counts are shrunk (the simulator runs one Python
thread per CUDA thread) for the duration of each test module and restored afterwards.
"""
import importlib
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402

SMALL_TILES = {  # the simulator's cost is ~1-2 ms per simulated thread: keep thread counts low
    "elementwise": dict(THREADS=4, MAX_BLOCKS=2), "array": dict(THREADS=4, MAX_BLOCKS=2),
    "embedding": dict(THREADS=4, MAX_BLOCKS=2), "adam": dict(THREADS=4, MAX_BLOCKS=2),
    "reduce": dict(THREADS=2), "softmax": dict(THREADS=2), "cross_entropy": dict(THREADS=2),
    "layer_norm": dict(THREADS=2, COL_THREADS=4),
    "matmul": dict(TILE_M=8, TILE_N=8, TILE_K=4, MICRO_M=4, MICRO_N=4),
    "attention": dict(BLOCK_Q=4, BLOCK_K=4, ROWDOT_THREADS=4), "clip": dict(THREADS=4),
}


@pytest.fixture(autouse=True, scope="module")
def small_tiles():
    from numba import config

    if not config.ENABLE_CUDASIM:  # a real GPU: keep the production tiles
        yield
        return
    mods = {m: importlib.import_module(f"minitrans.kernels.cuda.{m}") for m in SMALL_TILES}
    saved = {m: {k: getattr(mods[m], k) for k in kv} for m, kv in SMALL_TILES.items()}
    for m, kv in SMALL_TILES.items():
        for k, v in kv.items():
            setattr(mods[m], k, v)
    yield
    for m, kv in saved.items():
        for k, v in kv.items():
            setattr(mods[m], k, v)
