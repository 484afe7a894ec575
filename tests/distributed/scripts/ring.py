"""ring_attention on N ranks against single-process fused attention on the whole sequence:
forward and the three gradients, float64 and float32, causal and not; causal skips future blocks."""
import os

import numpy as np

import minitrans as mt
import minitrans.distributed as dist
import minitrans.nn.functional as F
from minitrans.kernels.cpu import attention as cpu_attention

dist.init_process_group(backend="mpi")
r, n = dist.get_rank(), dist.get_world_size()
# a spy on the CPU flash kernel, which ring attention calls itself (merging each block in place);
# the backend's attention_forward, which the single-process reference runs, is bound apart
calls = []
orig = cpu_attention.attention_forward
cpu_attention.attention_forward = lambda *a, **kw: calls.append(a[4]) or orig(*a, **kw)   # a[4]: is_causal

# awkward sizes: a (2, 3) batch of heads, 5 positions per rank, head dim 3, values of width 4;
# with TILED=1 also 130 positions per rank (past the short-sequence kernel: the tiled one)
configs = [((2, 3), 5, 3, 4)] + ([((1,), 130, 8, 8)] if os.environ.get("TILED") == "1" else [])
for H, T, D, DV in configs:
    rng = np.random.default_rng(7)                     # the same full sequence on every rank
    Q, K, V = rng.normal(size=(*H, n * T, D)), rng.normal(size=(*H, n * T, D)), rng.normal(size=(*H, n * T, DV))
    W = rng.normal(size=(*H, n * T, DV))               # loss = sum(O * W): a random output gradient
    mine = slice(r * T, (r + 1) * T)
    for dtype, tol in ((mt.float64, 1e-5), (mt.float32, 1e-4)):
        for causal in (False, True):
            full = [mt.tensor(a, dtype=dtype, requires_grad=True) for a in (Q, K, V)]
            o_ref = F.scaled_dot_product_attention(*full, is_causal=causal)
            (o_ref * mt.tensor(W, dtype=dtype)).sum().backward()
            part = [mt.tensor(a[..., mine, :], dtype=dtype, requires_grad=True) for a in (Q, K, V)]
            calls.clear()
            o = dist.ring_attention(*part, is_causal=causal)
            # its own block first (causally masked), then the r earlier ones; the later ones are skipped
            assert calls == ([True] + [False] * r if causal else [False] * n), (r, calls)
            (o * mt.tensor(W[..., mine, :], dtype=dtype)).sum().backward()
            what = f"{dtype} causal={causal} rank {r}/{n}"
            assert o.dtype is dtype and o.shape == (*H, T, DV)
            np.testing.assert_allclose(o.numpy(), o_ref.numpy()[..., mine, :], rtol=tol, atol=tol,
                                       err_msg="O " + what)
            for name, p, f in zip("QKV", part, full):
                assert p.grad.dtype is dtype
                np.testing.assert_allclose(p.grad.numpy(), f.grad.numpy()[..., mine, :], rtol=tol, atol=tol,
                                           err_msg=f"d{name} {what}")

# cuda tensors (the simulator under the tests, WITH_CUDA=1): blocks staged through host buffers
if os.environ.get("WITH_CUDA") == "1":
    rng = np.random.default_rng(8)
    T, D = 3, 2
    Q, K, V, W = (rng.normal(size=(2, n * T, D)) for _ in range(4))
    mine = slice(r * T, (r + 1) * T)
    full = [mt.tensor(a, dtype=mt.float32, requires_grad=True) for a in (Q, K, V)]
    o_ref = F.scaled_dot_product_attention(*full, is_causal=True)
    (o_ref * mt.tensor(W, dtype=mt.float32)).sum().backward()
    part = [mt.tensor(a[:, mine], dtype=mt.float32, device="cuda", requires_grad=True) for a in (Q, K, V)]
    o = dist.ring_attention(*part, is_causal=True)
    (o * mt.tensor(W[:, mine], dtype=mt.float32, device="cuda")).sum().backward()
    assert o.device.type == "cuda"
    np.testing.assert_allclose(o.numpy(), o_ref.numpy()[:, mine], rtol=1e-4, atol=1e-4)
    for p, f in zip(part, full):
        assert p.grad.device.type == "cuda"
        np.testing.assert_allclose(p.grad.numpy(), f.grad.numpy()[:, mine], rtol=1e-4, atol=1e-4)

# memory: the ring's buffers above its inputs, counted in blocks of (B, T, d) (tiny kernel tiles and
# exchange chunks, so that only block-sized buffers count). The forward holds at most O and two
# pairs of K, V buffers (5 blocks). The ring's backward adds dQ, the travelling dK, dV and the
# visiting K, V (5) to what it is given; after it the autograd engine copies the three gradients
# into the leaves' .grad while it holds them and the output O (7 in all). Per-block kernel
# outputs or a second set of exchange buffers would add 2-3 blocks to either figure.
import tracemalloc  # noqa: E402

from minitrans.distributed import ring as ring_module  # noqa: E402

cpu_attention.BLOCK_Q, cpu_attention.BLOCK_K, ring_module.CHUNK_BYTES = 16, 24, 4096
B, T, D = 4, 512, 32
block = B * T * D * 8
rng = np.random.default_rng(r)
part = [mt.tensor(rng.normal(size=(B, T, D)), requires_grad=True) for _ in range(3)]
G = mt.tensor(rng.normal(size=(B, T, D)))                  # dO: a given C-contiguous gradient
ring_backward, in_backward = ring_module._ring_backward, []


def measured_backward(*args):
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    grads = ring_backward(*args)
    in_backward.append(tracemalloc.get_traced_memory()[1] - start)
    return grads


ring_module._ring_backward = measured_backward
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
o = dist.ring_attention(*part)
fwd_peak = tracemalloc.get_traced_memory()[1] - base
o.backward(G)
peak = tracemalloc.get_traced_memory()[1] - base
tracemalloc.stop()
ring_module._ring_backward = ring_backward
got = (r, n, fwd_peak / block, in_backward[0] / block, peak / block)
assert fwd_peak <= 5.25 * block and in_backward[0] <= 5.25 * block and peak <= 7.25 * block, got

# a rank with another block length: a clear error on every rank
try:
    dist.ring_attention(*(mt.ones(2, 5 + (r == 1), 3) for _ in range(3)))
    raise AssertionError("no error")
except ValueError as e:
    assert "ring_attention: the (query, key, value) block differs between ranks" in str(e), e
print(f"OK rank {r}", flush=True)
