"""What one training step of a small encoder-decoder asks of the CUDA device: kernel launches
(per kernel), device allocations that miss the caching pool, host waits on the device, the
distinct kernel specialisations the first step compiles, and the first / warm step times.

    python experiments/cuda_step_cost.py            # on a GPU, or in the simulator without one
    python experiments/cuda_step_cost.py --json out.json

The counts do not depend on the hardware: without a GPU the script runs in Numba's CUDA
simulator (with the simulator's shrunken tiles, as the tests) and reports the counts only —
simulator times say nothing about a GPU and are not printed. The model is the tests' tiny
encoder-decoder shape (1 + 1 layers, d = 8, two heads, vocabulary 7) built from
``minitrans.models.Seq2Seq``; the step is forward, backward, ``clip_grad_norm_``, Adam, zero_grad.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

if __name__ == "__main__" and "--gpu" not in sys.argv:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402

import minitrans as mt  # noqa: E402
import minitrans.nn.functional as F  # noqa: E402
from minitrans.models import Seq2Seq, Seq2SeqConfig  # noqa: E402

def build(seed: int = 0):
    """The model, its optimizer and one batch, all on ``cuda``."""
    mt.manual_seed(seed)
    cfg = Seq2SeqConfig(vocab_size=7, d_model=8, nhead=2, num_layers=1, dim_feedforward=16, max_len=8)
    model = Seq2Seq(cfg)
    model.to("cuda")
    opt = mt.optim.Adam(model.parameters(), lr=1e-2)
    src = np.array([[1, 2, 3, 4], [5, 6, 2, 0]])
    tgt_in = np.array([[1, 3, 2], [4, 4, 1]])
    tgt_out = np.array([[3, 2, 6], [4, 1, 0]])
    return model, opt, tuple(mt.tensor(a, device="cuda") for a in (src, tgt_in, tgt_out))


def step(model, opt, batch):
    src, tgt_in, tgt_out = batch
    logits = model(src, tgt_in)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=0)
    loss.backward()
    mt.optim.clip_grad_norm_(model.parameters(), 1.0)  # what minitrans.train calls
    opt.step()
    opt.zero_grad()
    return loss


def measure() -> dict:
    from minitrans.kernels.cuda._util import counters, record_launches
    from minitrans.kernels.cuda.simulator import small_tiles

    sim = mt.cuda.is_simulated()
    with small_tiles() if sim else contextlib.nullcontext():
        model, opt, batch = build()
        counters.reset()
        with record_launches() as specs:
            t0 = time.perf_counter()
            step(model, opt, batch)
            mt.cuda.synchronize()
            first = time.perf_counter() - t0
        first_counts = counters.snapshot()
        counters.reset()
        t0 = time.perf_counter()
        step(model, opt, batch)
        in_step = counters.snapshot()  # before the synchronize() this script asks for
        mt.cuda.synchronize()
        warm = time.perf_counter() - t0
    res = {"device": "simulator" if sim else "gpu", "warm_step": in_step,
           "warm_step_launches_by_kernel": dict(sorted(counters.launched.items(), key=lambda kv: -kv[1])),
           "first_step": first_counts, "distinct_specialisations_first_step": len(specs),
           "load_avg": os.getloadavg()}
    if not sim:
        res["first_step_s"], res["warm_step_s"] = first, warm
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="require a real GPU (no simulator)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    res = measure()
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
