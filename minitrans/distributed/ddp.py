"""``DistributedDataParallel``: the same model on every rank, each rank on its share of the batch,
gradients averaged over ranks during backward.

* Wrapping checks that every rank built the same architecture (parameter and buffer names,
  shapes, dtypes; a clear error names the first difference) and copies rank 0's parameters and
  buffers to every rank.
* Parameters are grouped into buckets of about ``bucket_cap_mb`` (in reverse registration
  order, roughly the order backward finishes their gradients). A post-accumulate hook on each
  parameter copies its gradient into its bucket; when a bucket is complete its non-blocking
  ``Iallreduce`` starts at once, while backward goes on with the earlier layers. Buckets start
  in the same order on every rank (a bucket waits for the ones before it), as MPI requires.
* After the first backward the buckets are rebuilt in the order the gradients actually
  arrived (rank 0's order, sent to every rank), as PyTorch does: registration order is only
  a guess (a LayerNorm registered late in a layer gets its gradient last).
* When the backward pass finishes (an engine callback) the last buckets start, every
  reduction is waited for and each ``.grad`` becomes the average over ranks, so
  ``optimizer.step()`` right after ``backward()`` sees synchronised gradients.
* ``no_sync()`` skips the reduction (gradient accumulation); the first backward outside it
  averages everything accumulated.
* Device (cuda) gradients: with a CUDA-aware MPI the buckets live in device memory and go to
  MPI as they are; otherwise they are staged through page-locked host buckets (the MPI wheels
  are not CUDA-aware). See docs/distributed.md.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..autograd.engine import queue_callback
from ..nn.module import Module
from ..tensor import Tensor
from ._mpi import Staged, cuda_aware, mpi, pinned_empty, write_back
from .process_group import _comm, _signature


class _Bucket:
    """One flat buffer for the gradients of ``params``: host memory for CPU parameters; for device
    parameters device memory when MPI is CUDA-aware (``on_device``), else page-locked host memory."""

    __slots__ = ("params", "slots", "buf", "left", "filled", "request", "dtype", "on_device")

    def __init__(self, params: list) -> None:
        self.params = params
        self.dtype = np.dtype(params[0]._data.dtype)
        self.slots, off = [], 0
        for p in params:
            self.slots.append((off, p.numel()))
            off += p.numel()
        backend = params[0].device.backend
        self.on_device = not backend.host_memory and cuda_aware()
        self.buf = backend.zeros(off, self.dtype) if self.on_device else \
            np.empty(off, self.dtype) if backend.host_memory else pinned_empty(off, self.dtype)
        self.left, self.filled, self.request = len(params), [False] * len(params), None

    @property
    def nbytes(self) -> int:
        return int(self.buf.nbytes)

    @property
    def mpi_buffer(self):
        return self.buf._device_array if self.on_device else self.buf


def _grad_into(view, g) -> None:
    """Copy a gradient array (host or device) into a flat bucket slice (host or device)."""
    if not isinstance(view, np.ndarray):                 # a device bucket: a copy on the device
        view[...] = g.reshape(-1)
    elif isinstance(g, np.ndarray):
        np.copyto(view, g.reshape(-1))
    elif g._is_contiguous():
        g._device_array.copy_to_host(view.reshape(g.shape))
    else:
        from ..backends.cuda import to_numpy   # numba-cuda is optional: only device gradients get here

        np.copyto(view, to_numpy(g).reshape(-1))


def _grad_from(p: Tensor, view) -> None:
    """Make ``p.grad`` the values in ``view`` (in place when it exists)."""
    if not isinstance(view, np.ndarray):                 # a device bucket
        if p.grad is None:
            p.grad = Tensor._wrap(view.reshape(p.shape).copy(), p.device)
        else:
            p.grad._data[...] = view.reshape(p.shape)
    elif p.grad is None:
        p.grad = Tensor._wrap(p.device.backend.from_numpy(view.reshape(p.shape), copy=True), p.device)
    else:
        write_back(p.grad._data, view)


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training (call ``init_process_group`` first).

    ``check_inputs`` (default on) compares the shapes of the positional array/Tensor inputs
    across ranks at each forward, so a rank whose batch differs fails with a clear error (one
    small collective per step). ``bucket_cap_mb`` sets the bucket size, as in PyTorch.
    """

    def __init__(self, module: Module, device_ids=None, output_device=None, broadcast_buffers: bool = True,
                 bucket_cap_mb: float = 25.0, check_inputs: bool = True) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a minitrans.nn.Module, "
                            f"got {type(module).__name__}")
        try:
            comm = _comm()
        except ValueError:
            raise ValueError("DistributedDataParallel: the default process group has not been initialized; "
                             "call minitrans.distributed.init_process_group(backend='mpi') first") from None
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb}")
        if module.__dict__.get("_ddp_wrapped"):
            # a second wrapper would add a second set of gradient hooks: every gradient reduced twice
            raise ValueError("DistributedDataParallel: this module is already wrapped; use the existing "
                             "wrapper (its .module is the model)")
        object.__setattr__(module, "_ddp_wrapped", True)
        self.module = module
        object.__setattr__(self, "_comm", comm)
        object.__setattr__(self, "check_inputs", bool(check_inputs))
        object.__setattr__(self, "require_backward_grad_sync", True)
        self._check_architecture()
        self._broadcast_state()
        object.__setattr__(self, "_cap", int(bucket_cap_mb * (1 << 20)))
        object.__setattr__(self, "_armed", False)
        object.__setattr__(self, "_next", 0)
        object.__setattr__(self, "_order", [])            # gradient arrival order of the first backward
        object.__setattr__(self, "_rebuilt", False)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self._set_buckets(params[::-1])
        for p in params:
            p.register_post_accumulate_grad_hook(self._on_grad)

    # ------------------------------------------------------------------ wrap time
    def _check_architecture(self) -> None:
        mine = [(n, *_signature(t), t.requires_grad, kind)
                for kind, items in (("parameter", self.module.named_parameters()),
                                    ("buffer", self.module.named_buffers()))
                for n, t in items]
        every = self._comm.allgather(mine)
        for r, theirs in enumerate(every):
            if theirs == every[0]:
                continue
            for a, b in zip(every[0], theirs):
                if a != b:
                    what = (f"{a[5]} {a[0]!r} has shape {a[1]}, dtype {a[2]}, device {a[3]} on rank 0 but "
                            f"{b[5]} {b[0]!r} has shape {b[1]}, dtype {b[2]}, device {b[3]} on rank {r}")
                    if a[4] != b[4] and a[:4] == b[:4]:
                        what = f"{a[5]} {a[0]!r} has requires_grad={a[4]} on rank 0 but {b[4]} on rank {r}"
                    break
            else:
                what = f"rank 0 has {len(every[0])} parameters and buffers, rank {r} has {len(theirs)}"
            raise ValueError(f"DistributedDataParallel: the model differs between ranks: {what}; "
                             f"every rank must build the same architecture")

    def _broadcast_state(self) -> None:
        root = self._comm.Get_rank() == 0
        for _, t in list(self.module.named_parameters()) + list(self.module.named_buffers()):
            st = Staged(t._data, read=root)
            self._comm.Bcast(st.buf, root=0)
            st.finish()
            t._version_counter[0] += 1

    def _set_buckets(self, params: list) -> None:
        """Group ``params`` (in reduction order) into buckets of about ``_cap`` bytes."""
        cap = self._cap
        buckets, cur, size = [], [], 0
        for p in params:
            if cur and (size + p._data.nbytes > cap or p._data.dtype != cur[0]._data.dtype
                        or p.device != cur[0].device):
                buckets.append(cur)
                cur, size = [], 0
            cur.append(p)
            size += p._data.nbytes
        if cur:
            buckets.append(cur)
        object.__setattr__(self, "_buckets", [_Bucket(ps) for ps in buckets])
        object.__setattr__(self, "_where", {id(p): (b, i) for b in self._buckets for i, p in enumerate(b.params)})

    @property
    def bucket_sizes(self) -> list[int]:
        """Bytes per bucket, in the order they are reduced."""
        return [b.nbytes for b in self._buckets]

    # ------------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        if self.check_inputs:
            self._check_batch(args)
        return self.module(*args, **kwargs)

    def _check_batch(self, args) -> None:
        sig = [(tuple(a.shape), str(np.dtype(a.dtype if isinstance(a, np.ndarray) else a._data.dtype)))
               if isinstance(a, (Tensor, np.ndarray)) else None for a in args]
        every = self._comm.allgather(sig)
        for r, theirs in enumerate(every):
            if theirs != every[0]:
                i = next((i for i, (a, b) in enumerate(zip(every[0], theirs)) if a != b), None)
                what = (f"input {i} has shape {every[0][i][0]} ({every[0][i][1]}) on rank 0 but "
                        f"{theirs[i][0]} ({theirs[i][1]}) on rank {r}" if i is not None and every[0][i] and
                        theirs[i] else f"rank 0 passes {len(every[0])} inputs, rank {r} passes {len(theirs)}")
                raise ValueError(f"DistributedDataParallel: the batch differs between ranks: {what}; every rank "
                                 f"must get an equal share of the global batch (see shard_batch)")

    # ------------------------------------------------------------------ backward
    @contextlib.contextmanager
    def no_sync(self):
        """Inside: gradients accumulate locally and are not reduced."""
        old = self.require_backward_grad_sync
        object.__setattr__(self, "require_backward_grad_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "require_backward_grad_sync", old)

    def _on_grad(self, p: Tensor) -> None:
        if not self.require_backward_grad_sync:
            return
        if not self._armed:
            object.__setattr__(self, "_armed", True)
            for b in self._buckets:
                b.left, b.filled, b.request = len(b.params), [False] * len(b.params), None
            object.__setattr__(self, "_next", 0)
            queue_callback(self._finish_backward)
        if not self._rebuilt:
            self._order.append(id(p))
        b, i = self._where[id(p)]
        off, n = b.slots[i]
        _grad_into(b.buf[off:off + n], p.grad._data)
        if not b.filled[i]:
            b.filled[i] = True
            b.left -= 1
        self._launch_ready()

    def _launch(self, b: _Bucket) -> None:
        MPI = mpi()
        b.request = self._comm.Iallreduce(MPI.IN_PLACE, b.mpi_buffer, MPI.SUM)

    def _wait(self, b: _Bucket) -> None:
        b.request.Wait()

    def _launch_ready(self) -> None:
        bs = self._buckets
        while self._next < len(bs) and bs[self._next].left == 0:
            self._launch(bs[self._next])
            object.__setattr__(self, "_next", self._next + 1)
        started = [b.request for b in bs[:self._next]]
        if started:
            mpi().Request.Testall(started)           # lets MPI move the started reductions along

    def _finish_backward(self) -> None:
        object.__setattr__(self, "_armed", False)
        for b in self._buckets[self._next:]:
            for i, p in enumerate(b.params):
                if not b.filled[i]:                  # not in this step's graph: its gradient so far, or zeros
                    off, n = b.slots[i]
                    if p.grad is None:
                        b.buf[off:off + n] = 0
                    else:
                        _grad_into(b.buf[off:off + n], p.grad._data)
            b.left = 0
        self._launch_ready()
        n = self._comm.Get_size()
        for b in self._buckets:
            self._wait(b)
            b.buf /= n
            for p, (off, k) in zip(b.params, b.slots):
                _grad_from(p, b.buf[off:off + k])
        if not self._rebuilt:
            self._rebuild()

    def _rebuild(self) -> None:
        """Buckets in the order rank 0 saw gradients arrive (then the parameters that got none)."""
        object.__setattr__(self, "_rebuilt", True)
        params = [p for b in self._buckets for p in b.params]
        index = {id(p): i for i, p in enumerate(params)}
        mine = [index[k] for k in dict.fromkeys(self._order)]
        order = self._comm.bcast(mine, root=0)
        seen = set(order)
        self._set_buckets([params[i] for i in order] + [p for i, p in enumerate(params) if i not in seen])
