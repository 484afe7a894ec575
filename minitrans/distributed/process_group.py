"""The process group and the collectives on Tensors, with ``torch.distributed``'s names.

One process per rank, started by ``mpiexec -n N python -m mpi4py script.py``; the group is
MPI's world, duplicated so that the library's messages never meet the user's own MPI traffic.
Collectives work in place on the Tensor given (host tensors directly, device tensors through
host staging buffers unless MPI is CUDA-aware) and check first that every rank passed a
tensor of the same shape and dtype, so a mismatch is an error naming both, never a hang.
"""
from __future__ import annotations

import enum

import numpy as np

from ..tensor import Tensor
from ._mpi import Staged, available, check_dtype, mpi, write_back

_GROUP: dict = {"comm": None}


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"


def is_available() -> bool:
    """True when mpi4py and an MPI library can be imported."""
    return available()


def init_process_group(backend: str = "mpi", init_method=None, timeout=None, world_size: int = -1,
                       rank: int = -1, **kwargs) -> None:
    """Join the group of every process ``mpiexec`` started. Only ``backend="mpi"`` exists:
    MPI itself says who the ranks are, so ``world_size``/``rank``, when given, must agree with it."""
    if backend != "mpi":
        raise ValueError(f"init_process_group: backend {backend!r} is not available; minitrans has only "
                         f"backend='mpi' (launch with: mpiexec -n N python -m mpi4py script.py)")
    if init_method is not None or kwargs:
        extra = ["init_method"] * (init_method is not None) + sorted(kwargs)
        raise ValueError(f"init_process_group: {', '.join(extra)} not supported: with MPI the launcher "
                         f"(mpiexec) tells each process its rank")
    if _GROUP["comm"] is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    MPI = mpi()
    world = MPI.COMM_WORLD
    if world_size not in (-1, None) and world_size != world.Get_size():
        raise ValueError(f"init_process_group: world_size={world_size} but mpiexec started "
                         f"{world.Get_size()} processes")
    if rank not in (-1, None) and rank != world.Get_rank():
        raise ValueError(f"init_process_group: rank={rank} but MPI says this process is rank {world.Get_rank()}")
    _GROUP["comm"] = world.Dup()


def is_initialized() -> bool:
    return _GROUP["comm"] is not None


def _comm():
    c = _GROUP["comm"]
    if c is None:
        raise ValueError("Default process group has not been initialized, please make sure to call "
                         "init_process_group.")
    return c


def get_rank(group=None) -> int:
    return _comm().Get_rank()


def get_world_size(group=None) -> int:
    return _comm().Get_size()


def barrier(group=None) -> None:
    _comm().Barrier()


def destroy_process_group(group=None) -> None:
    c = _comm()
    _GROUP["comm"] = None
    c.Free()


def get_comm():
    """The group's MPI communicator (an ``mpi4py.MPI.Comm``), for MPI calls of your own."""
    return _comm()


# --------------------------------------------------------------------------- checks
def _need_tensor(t, fn: str, arg: str = "tensor") -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {arg} must be a Tensor, got {type(t).__name__}")


def _signature(t: Tensor) -> tuple:
    """What must agree across ranks for a collective on ``t``: shape, dtype and the kind of device
    (the backend's name: rank 0 on ``cuda:0`` and rank 1 on ``cuda:1`` agree)."""
    return (tuple(t.shape), str(np.dtype(t._data.dtype)), t.device.backend.name)


def check_same_across_ranks(fn: str, what: str, sig, comm=None) -> None:
    """All-gather ``sig`` (any picklable value) and raise ValueError on every rank, naming the first
    rank whose value differs from rank 0's. A small collective: every rank must call it."""
    comm = comm or _comm()
    sigs = comm.allgather(sig)
    for r, s in enumerate(sigs):
        if s != sigs[0]:
            raise ValueError(f"{fn}: {what} differs between ranks: rank 0 has {_show(sigs[0])}, "
                             f"rank {r} has {_show(s)}")


def _show(sig) -> str:
    if isinstance(sig, tuple) and len(sig) == 3 and isinstance(sig[0], tuple):
        return f"shape {sig[0]}, dtype {sig[1]}, device {sig[2]}"
    return repr(sig)


# --------------------------------------------------------------------------- collectives
class Work:
    """The handle of a collective started with ``async_op=True``: ``wait()`` finishes it."""

    def __init__(self, request, finish) -> None:
        self._req, self._finish, self._done = request, finish, False

    def is_completed(self) -> bool:
        if not self._done and self._req.Test():
            self._complete()
        return self._done

    def wait(self, timeout=None) -> bool:
        if not self._done:
            self._req.Wait()
            self._complete()
        return True

    def _complete(self) -> None:
        self._done = True
        self._finish()


def _mpi_op(op, fn: str):
    MPI = mpi()
    table = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.MAX: MPI.MAX, ReduceOp.MIN: MPI.MIN,
             ReduceOp.PRODUCT: MPI.PROD}
    if op not in table:
        raise ValueError(f"{fn}: op must be a ReduceOp (SUM, AVG, MAX, MIN, PRODUCT), got {op!r}")
    return table[op]


def _bump(t: Tensor) -> None:
    t._version_counter[0] += 1          # written in place: a graph that saved it must notice


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, group=None, async_op: bool = False):
    """Reduce ``tensor`` over every rank in place (``AVG`` = sum / world size, float tensors only)."""
    _need_tensor(tensor, "all_reduce")
    check_dtype(tensor._data, "all_reduce")
    mop = _mpi_op(op, "all_reduce")
    if op is ReduceOp.AVG and not tensor.dtype.is_floating_point:
        raise TypeError(f"all_reduce: ReduceOp.AVG needs a floating-point tensor, got {tensor.dtype}")
    comm = _comm()
    check_same_across_ranks("all_reduce", "the tensor", _signature(tensor), comm)
    st = Staged(tensor._data)
    MPI = mpi()
    n = comm.Get_size()

    def finish():
        st.finish()
        if op is ReduceOp.AVG:
            d = tensor._data
            d /= n                      # in place, on the host or the device
        _bump(tensor)

    if async_op:
        return Work(comm.Iallreduce(MPI.IN_PLACE, st.buf, mop), finish)
    comm.Allreduce(MPI.IN_PLACE, st.buf, mop)
    finish()
    return None


def broadcast(tensor: Tensor, src: int = 0, group=None, async_op: bool = False):
    """Overwrite ``tensor`` on every rank with rank ``src``'s."""
    _need_tensor(tensor, "broadcast")
    check_dtype(tensor._data, "broadcast")
    comm = _comm()
    if not 0 <= int(src) < comm.Get_size():
        raise ValueError(f"broadcast: src={src} is not a rank of this group (world size {comm.Get_size()})")
    check_same_across_ranks("broadcast", "the tensor", _signature(tensor), comm)
    st = Staged(tensor._data, read=comm.Get_rank() == src)

    def finish():
        st.finish()
        _bump(tensor)

    if async_op:
        return Work(comm.Ibcast(st.buf, root=int(src)), finish)
    comm.Bcast(st.buf, root=int(src))
    finish()
    return None


def all_gather(tensor_list: list, tensor: Tensor, group=None, async_op: bool = False):
    """Fill ``tensor_list[r]`` with rank r's ``tensor`` (every rank passes the same shape and dtype)."""
    _need_tensor(tensor, "all_gather")
    check_dtype(tensor._data, "all_gather")
    comm = _comm()
    n = comm.Get_size()
    if not isinstance(tensor_list, list) or len(tensor_list) != n:
        got = len(tensor_list) if isinstance(tensor_list, list) else type(tensor_list).__name__
        raise ValueError(f"all_gather: tensor_list must be a list of {n} tensors (one per rank), got {got}")
    for i, t in enumerate(tensor_list):
        _need_tensor(t, "all_gather", f"tensor_list[{i}]")
        if _signature(t) != _signature(tensor):
            raise ValueError(f"all_gather: tensor_list[{i}] has {_show(_signature(t))} but the tensor has "
                             f"{_show(_signature(tensor))}")
    check_same_across_ranks("all_gather", "the tensor", _signature(tensor), comm)
    send = Staged(tensor._data)
    recv = np.empty((n,) + tuple(tensor.shape), np.dtype(tensor._data.dtype))

    def finish():
        for i, t in enumerate(tensor_list):
            write_back(t._data, recv[i])
            _bump(t)

    if async_op:
        return Work(comm.Iallgather(send.buf, recv), finish)
    comm.Allgather(send.buf, recv)
    finish()
    return None


def broadcast_object(obj=None, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank (the others pass anything, e.g. None)."""
    return _comm().bcast(obj, root=src)


def on_main(fn, *args, **kwargs):
    """Run ``fn`` on rank 0 only and return its result on every rank; an exception it raises is
    raised on every rank (so a bad command line stops the whole job with rank 0's message)."""
    comm = _comm()
    out = None
    if comm.Get_rank() == 0:
        try:
            out = ("ok", fn(*args, **kwargs))
        except Exception as e:                 # re-raised below, on every rank
            out = ("error", e)
    kind, value = comm.bcast(out, root=0)
    if kind == "error":
        raise value
    return value
