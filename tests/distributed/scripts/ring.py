"""ring_attention on N ranks against single-process fused attention on the whole sequence:
forward and the three gradients, float64 and float32, causal and not; causal skips future blocks."""
import os

import numpy as np

import minitrans as mt
import minitrans.distributed as dist
import minitrans.nn.functional as F

dist.init_process_group(backend="mpi")
r, n = dist.get_rank(), dist.get_world_size()
xp = mt.tensor([1.0]).device.backend
calls = []
orig = xp.attention_forward
xp.attention_forward = staticmethod(lambda *a: calls.append(a[4]) or orig(*a))   # a[4]: is_causal

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

# a rank with another block length: a clear error on every rank
try:
    dist.ring_attention(*(mt.ones(2, 5 + (r == 1), 3) for _ in range(3)))
    raise AssertionError("no error")
except ValueError as e:
    assert "ring_attention: the (query, key, value) block differs between ranks" in str(e), e
print(f"OK rank {r}", flush=True)
