"""Long runs: a 100,000-node graph is freed completely after backward (no reference cycles
keep graphs alive), and memory stays flat over many training steps.

(That such a chain's backward is iterative and fast is tested in tests/test_engine.py.)
"""
from __future__ import annotations

import contextlib
import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import minitrans as mt
from tiny_training import make, train_step

N = 100_000


@contextlib.contextmanager
def no_automatic_gc():
    """Only reference counting frees memory inside the block, so a cycle would stay and show."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def chain(x, n=N):
    y = x
    for i in range(n):
        y = y * 1.00001 if i % 2 else y + 0.25
    return y


# Python keeps up to 2000 freed tuples of each small size for reuse (the tuple free list):
# about 200 KiB of the graph's tuples stay "allocated" for tracemalloc after everything is freed.
FREE_LISTS = 320 * 1024


@pytest.mark.parametrize("retain_graph,n", [(False, N), (True, 20_000)])
def test_long_chain_is_freed_after_backward(retain_graph, n):
    x = mt.tensor([0.5, 1.5], dtype=mt.float64, requires_grad=True)
    with no_automatic_gc():
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            y = chain(x, n)
            mid = weakref.ref(y.grad_fn.parents[0].parents[0])    # a node deep inside the graph
            built = tracemalloc.get_traced_memory()[0] - base
            y.sum().backward(retain_graph=retain_graph)
            del y
            assert mid() is None, "an intermediate node outlived its graph (a reference cycle?)"
            left = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert gc.collect() == 0, "the graph held reference cycles"
    np.testing.assert_allclose(x.grad.numpy(), 1.00001 ** (n // 2), rtol=1e-9)
    assert built > 500 * n, f"the graph should take real memory ({built} bytes); is tracing working?"
    # what stays is x.grad and Python's free lists, not the graph (62 MB for 100k nodes)
    assert left < FREE_LISTS, f"{left} bytes still allocated after backward + del (graph took {built})"


def test_graph_freed_without_backward():
    x = mt.tensor([0.5], requires_grad=True)
    with no_automatic_gc():
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            y = chain(x, 20_000)
            first = weakref.ref(y.grad_fn)
            del y
            left = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert first() is None
        assert gc.collect() == 0
    assert left < FREE_LISTS


def test_hooks_and_retain_grad_do_not_create_cycles():
    x = mt.randn(3, requires_grad=True)
    with no_automatic_gc():
        y = x * 2.0
        y.retain_grad()
        y.register_hook(lambda g: g * 1.0)
        z = (y.exp() * y).sum()
        node = weakref.ref(y.grad_fn)
        z.backward()
        assert y.grad is not None
        del y, z
        assert node() is None
        assert gc.collect() == 0


def test_memory_flat_over_many_training_steps():
    model, opt, sched = make(seed=0)
    for _ in range(3):                                  # warm caches, optimizer state, kernels
        train_step(model, opt, sched)
    gc.collect()
    tracemalloc.start()
    try:
        samples = []
        for i in range(30):
            train_step(model, opt, sched)
            if i in (4, 29):
                gc.collect()
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert samples[1] - samples[0] < 256 * 1024, f"memory grew by {samples[1] - samples[0]} bytes over 25 steps"
