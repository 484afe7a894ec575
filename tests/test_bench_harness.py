"""The benchmark harness's plumbing on a tiny workload (no timings are asserted): each side runs in its
own process with the thread count it was given, every side starts from the same weights and data,
a figure is the median of the per-process medians, and the Markdown keeps the other tables."""
from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))

import bench  # noqa: E402
import bench_worker  # noqa: E402

TINY = dict(vocab=64, d_model=16, nhead=2, layers=1, dff=32, seq=6, batch=3, n_batches=2, seed=3, warmup=2, steps=2)


def test_w1_sides_run_apart_from_the_same_weights(tmp_path):
    pytest.importorskip("torch")
    job = dict(workload="W1", weights=str(tmp_path / "w.npz"), **TINY)
    res = bench.race({"minitrans": [job], "torch": [job]}, rounds=1, threads=1, layer="workqueue", label="tiny")
    assert (tmp_path / "w.npz").exists()                 # written by the first minitrans process
    mt_info, torch_info = res["minitrans"]["info"], res["torch"]["info"]
    assert mt_info["pid"] != torch_info["pid"] != os.getpid()
    assert mt_info["numba_threads"] == 1 and mt_info["layer"] == "workqueue"
    assert mt_info["blas_threads"] in (1, None) and torch_info["torch_threads"] == 1
    lm, lt = res["minitrans"]["jobs"][0]["losses"], res["torch"]["jobs"][0]["losses"]
    assert abs(lm[0] - lt[0]) < 1e-4 and abs(lm[1] - lt[1]) < 1e-4     # same init, data and one Adam step
    assert lm[1] != lm[0]                                                 # and the step did change the weights
    for side in res.values():
        s = side["jobs"][0]
        assert len(s["process_medians_s"]) == 1
        assert s["median_s"] == statistics.median(s["process_medians_s"])
        assert s["flops"] == bench_worker.w1_flops(job) > 0


def test_w1_flop_count_matches_a_hand_count():
    # W1: 2048 tokens; per layer and token 2·(4·128² + 2·128·512) + 4·64·128; head 2·128·64; ×3 for backward
    job = bench.w1_job("/tmp", 0, 0, 0)
    per_token = 2 * (2 * (4 * 128 ** 2 + 2 * 128 * 512) + 4 * 64 * 128) + 2 * 128 * 64
    assert bench_worker.w1_flops(job) == 3 * 2048 * per_token
    assert abs(bench_worker.w1_flops(job) / 1e9 - 5.34) < 0.01


def test_results_md_keeps_other_thread_blocks(tmp_path):
    md = tmp_path / "R.md"
    md.write_text("# Results\n\nintro\n")
    info = dict(command="c", date="d", cpu="cpu", cores=2, load_before="1", load_after="2", gemm_before=100.0,
                gemm_after=90.0, gemm_gflops=100.0, threads=2, numba_layer="workqueue", python="3", numpy="2",
                numba="0", torch=None, jax=None, minitrans="0", rounds=3)
    rows = [bench.row("W5 op overhead", "chain", "µs/op", 5.0, "torch", 4.0, 1.25)]
    bench.write_results_md(md, bench.markdown(rows, info, {}))
    bench.write_results_md(md, bench.markdown(rows, {**info, "threads": 1}, {}))
    bench.write_results_md(md, bench.markdown(rows, info, {}))            # replaces the 2-thread block only
    text = md.read_text()
    assert text.startswith("# Results\n\nintro")
    assert text.count("### 2 thread(s)") == 1 and text.count("### 1 thread(s)") == 1
    assert "load average 1 before, 2 after" in text and "100 GFLOP/s before" in text


def test_worker_failure_is_reported_with_its_error(tmp_path):
    job = dict(workload="W3", n=-1, seed=0, warmup=1, reps=1)        # a negative matrix size
    with pytest.raises(RuntimeError, match=r"(?s)the numpy worker failed \(exit 1\):.*negative dimensions"):
        bench.run_process("numpy", [job], 1, "workqueue")


def test_products_option_reaches_the_minitrans_worker(tmp_path, monkeypatch):
    """--products blas leaves OpenBLAS on the worker's thread count; the default puts it on one thread."""
    job = dict(workload="W1", weights=str(tmp_path / "w.npz"), **TINY)
    seen = {}
    for products in ("split", "blas"):
        monkeypatch.setitem(bench.EXTRA_ENV, "MT_BENCH_PRODUCTS", products)
        info = bench.race({"minitrans": [job]}, rounds=1, threads=2, layer="workqueue", label="tiny")["minitrans"]["info"]
        seen[products] = (info["products"], info["blas_threads"])
    if seen["split"][1] is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS minitrans.threads can reach")
    assert seen == {"split": ("split", 1), "blas": ("blas", 2)}


def test_op_times_counts_each_op_and_puts_the_classes_back(tmp_path):
    import time

    from minitrans.ops.elementwise import Relu
    from minitrans.ops.linalg import Linear

    import minitrans as mt

    w1_step = bench_worker.w1_minitrans(dict(TINY, weights=str(tmp_path / "w.npz")), tmp_path / "w.npz")
    x = mt.ones(3, requires_grad=True)

    def step():
        w1_step()
        x.relu().sum().backward()        # Relu: an op whose forward a mixin defines (W1 fuses its own ReLU)

    step()
    before = {cls: dict(vars(cls)) for cls in bench._function_classes()}
    ops, whole = bench.op_times(step, 2, time.perf_counter)
    # 1 layer: in-projection, out-projection, second feed-forward layer; the head; the first
    # feed-forward layer is fused with its ReLU
    assert ops[("Linear", "forward")][1] == ops[("Linear", "backward")][1] == 1 * 3 + 1
    assert ops[("LinearRelu", "forward")][1] == ops[("LinearRelu", "backward")][1] == 1
    assert ops[("Relu", "forward")][1] == 1
    assert whole >= sum(ms for ms, _ in ops.values()) > 0
    assert {cls: dict(vars(cls)) for cls in bench._function_classes()} == before
    assert "forward" not in vars(Relu) and isinstance(vars(Linear)["forward"], staticmethod)
