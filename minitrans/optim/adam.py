"""Adam and AdamW over flat buffers: one fused kernel launch per step for all the parameters of
a group that share a device and dtype (``adam_step`` of the backend: a Numba kernel on the CPU,
a CUDA kernel on ``cuda``).

On its first step for a set of parameters the optimizer packs them into one flat buffer per
(group, device, dtype) — each parameter's ``.data`` becomes a view of its slice, and so do its
``exp_avg`` / ``exp_avg_sq`` state and its gradient (the backward engine writes a registered
parameter's gradient straight into its slice, see ``autograd.engine.set_grad_buffer``). The
update is element-wise, so one launch over the buffer computes exactly what one launch per
parameter did, and ``state_dict`` has the same per-parameter form as before. Whatever replaces
a packed array (``load_state_dict``, assigning ``.data``, moving the model) is copied back into
the buffer on the next step. Parameters whose step counts differ (one skipped a step with no
gradient) are updated one launch each, on their slices. The usual step — the same parameters as
the step before, their gradients already in the buffer, equal step counts — checks that by identity
and launches at once, without the per-parameter bookkeeping (``Adam._steady``).
"""
from __future__ import annotations

import weakref

from ..autograd import engine
from .optimizer import Optimizer, _check_numbers

_FLATS = weakref.WeakSet()  # the live flat buffers (clip_grad_norm_ looks for its gradients here)


class _Flat:
    """The flat buffers of one (group, device, dtype): params, grads, exp_avg, exp_avg_sq."""

    def __init__(self, params, xp, dtype):
        self.params = params
        self.xp = xp
        self.state = self.states = None   # the optimizer's state dict and the parameters' entries (Adam.step)
        sizes = [p.numel() for p in params]
        n = sum(sizes)
        self.bufs = [xp.zeros((n,), dtype) for _ in range(4)]
        self.views = [[] for _ in range(4)]
        off = 0
        for p, k in zip(params, sizes):
            for buf, vs in zip(self.bufs, self.views):
                vs.append(buf[off:off + k].reshape(p.shape))
            off += k
        _FLATS.add(self)

    def sync(self, state) -> None:
        """Point every parameter, gradient and state entry at its slice (copying what was replaced)."""
        pv, gv, mv, vv = self.views
        for i, p in enumerate(self.params):
            if p._data is not pv[i]:
                pv[i][...] = p._data
                p._data = pv[i]
            if p.grad._data is not gv[i]:
                gv[i][...] = p.grad._data
            engine.set_grad_buffer(p, gv[i])
            st = state[p]
            for key, view in (("exp_avg", mv[i]), ("exp_avg_sq", vv[i])):
                if st[key] is not view:
                    view[...] = st[key]
                    st[key] = view


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as ``torch.optim.Adam``."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        _check_numbers(name, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: invalid lr={lr}, betas={betas}, eps={eps} or "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._flat: dict = {}
        self._last: dict = {}     # group index -> the _Flat its last step used, when it held the whole group

    def _bucket(self, gi: int, params) -> _Flat:
        p0 = params[0]
        key = (gi, p0.device, p0._data.dtype.str, tuple(id(p) for p in params))
        fl = self._flat.get(key)
        if fl is None:
            # a new set of parameters (first step, or another subset has gradients): new buffers
            self._flat = {k: v for k, v in self._flat.items() if k[:3] != key[:3]}
            fl = self._flat[key] = _Flat(params, p0.device.backend, p0._data.dtype)
        return fl

    def _steady(self, gi: int, group: dict):
        """The group's flat buffers when this step can skip the bookkeeping: the group's parameters are
        those of its buffers, in order, each with a gradient, and every parameter, gradient and state
        array is still its slice (all that ``sync`` would re-establish) at one step count. Else None."""
        fl = self._last.get(gi)
        if fl is None or fl.state is not self.state:
            return None
        params = group["params"]
        if len(params) != len(fl.params):
            return None
        pv, gv, mv, vv = fl.views
        step = None
        for i, p in enumerate(params):
            grad = p.grad
            if p is not fl.params[i] or grad is None or grad._data is not gv[i] or p._data is not pv[i]:
                return None
            st = fl.states[i]
            if (self.state.get(p) is not st or st["exp_avg"] is not mv[i] or st["exp_avg_sq"] is not vv[i]
                    or (step is not None and st["step"] != step)):
                return None
            step = st["step"]
        return fl

    def step(self) -> None:
        for gi, group in enumerate(self.param_groups):
            b1, b2 = group["betas"]
            args = (group["lr"], b1, b2, group["eps"], group["weight_decay"])
            fl = self._steady(gi, group)
            if fl is not None:            # the usual step: one launch, no per-parameter bookkeeping
                for st, p in zip(fl.states, fl.params):
                    st["step"] += 1
                    p._version_counter[0] += 1
                fl.xp.adam_step(*fl.bufs, *args, fl.states[0]["step"], self.decoupled)
                continue
            self._last.pop(gi, None)
            buckets: dict = {}
            seen = set()
            for p in group["params"]:
                if p.grad is None or id(p) in seen:
                    continue
                seen.add(id(p))
                buckets.setdefault((p.device, p._data.dtype.str), []).append(p)
                if p not in self.state:
                    xp = p.device.backend
                    self.state[p] = {"step": 0, "exp_avg": xp.zeros(p.shape, p._data.dtype),
                                     "exp_avg_sq": xp.zeros(p.shape, p._data.dtype)}
            for params in buckets.values():
                fl = self._bucket(gi, params)
                fl.sync(self.state)
                steps = set()
                for p in params:
                    st = self.state[p]
                    st["step"] += 1
                    steps.add(st["step"])
                    p._version_counter[0] += 1
                if len(buckets) == 1 and len(params) == len(group["params"]):
                    fl.state, fl.states = self.state, [self.state[p] for p in params]
                    self._last[gi] = fl       # the next step may take the short way (_steady)
                if len(steps) == 1:  # the usual case: one launch for the whole buffer
                    fl.xp.adam_step(*fl.bufs, *args, steps.pop(), self.decoupled)
                else:
                    for i, p in enumerate(params):
                        fl.xp.adam_step(*(v[i].reshape(-1) for v in fl.views), *args, self.state[p]["step"],
                                        self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
