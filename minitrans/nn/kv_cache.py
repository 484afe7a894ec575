"""The key/value cache of one attention module, kept in buffers that grow geometrically.

Incremental decoding appends one step's keys and values per token. Concatenating them onto
the old cache copies all L cached rows every step (O(L) per token, O(L²) per sequence);
here the rows live in buffers (B, H, capacity, head_dim) with spare capacity, a step writes
its rows in place, and a full buffer is replaced by one about 1.5× larger (amortised O(1)
copying per token). A ``KVCache`` is the first ``length`` rows of such a buffer.

Caches stay values: appending to a cache never changes what an older cache reads, because
a step writes only rows at or after the cache's own length. When two steps continue the
same cache (a branch: a benchmark repeating from one prompt, a caller trying two tokens),
the buffer remembers how many rows its latest cache filled; a cache shorter than that
copies its rows to a fresh buffer instead of overwriting rows another cache reads.
"""
from __future__ import annotations

import weakref

from ..tensor import Tensor


class KVStore:
    """Key and value buffers (B, H, capacity, head_dim) and how many rows the latest cache filled."""

    __slots__ = ("key", "value", "filled")

    def __init__(self, key, value, filled: int) -> None:
        self.key, self.value, self.filled = key, value, filled

    @property
    def capacity(self) -> int:
        return self.key.shape[2]


def grown_capacity(need: int) -> int:
    """Room for ``need`` rows and about half as many more (at least 32), so that appending one
    row per step reallocates only every ~need/2 steps."""
    return need + max(need // 2, 32)


class KVCache:
    """Keys and values one attention module has seen: ``key``, ``value`` (B, H, L, head_dim).

    ``static`` marks cross-attention keys/values (computed once per source). ``reorder(index)``
    picks batch rows (beam search keeps the surviving hypotheses). The cache remembers the
    module that made it, so passing it to another module is an error, not a silent mix-up.
    ``key``/``value`` are views of the first L rows of the (possibly larger) buffers.
    """

    __slots__ = ("store", "length", "static", "device", "_owner")

    def __init__(self, key: Tensor, value: Tensor, owner, static: bool = False) -> None:
        L = key.shape[2]
        self.store, self.length, self.static, self.device = KVStore(key._data, value._data, L), L, static, key.device
        self._owner = weakref.ref(owner)

    @classmethod
    def of_store(cls, store: KVStore, length: int, owner, static: bool, device) -> "KVCache":
        c = cls.__new__(cls)
        c.store, c.length, c.static, c.device, c._owner = store, length, static, device, weakref.ref(owner)
        return c

    @property
    def owner(self):
        return self._owner()

    @property
    def batch_size(self) -> int:
        return self.store.key.shape[0]

    @property
    def key(self) -> Tensor:
        return Tensor._wrap(self._rows(self.store.key), self.device)

    @property
    def value(self) -> Tensor:
        return Tensor._wrap(self._rows(self.store.value), self.device)

    def _rows(self, buf):
        return buf if buf.shape[2] == self.length else buf[:, :, :self.length]

    def extend(self, T: int) -> "KVCache":
        """The cache of this one's rows and T more, whose rows L .. L+T-1 the caller writes next:
        in this buffer when it has room and no other cache has continued this one, otherwise in
        a new buffer holding a copy of rows 0 .. L-1 (see the module docstring)."""
        store, L = self.store, self.length
        if store.filled != L or store.capacity < L + T:
            store = self._copy_rows(None, grown_capacity(L + T))
        store.filled = L + T
        return KVCache.of_store(store, L + T, self.owner, self.static, self.device)

    def append(self, key, value) -> "KVCache":
        """The cache with ``key``, ``value`` (B, T, H, head_dim) backend arrays appended as rows
        L .. L+T-1 (by ``extend``)."""
        L, T = self.length, key.shape[1]
        new = self.extend(T)
        new.store.key[:, :, L:L + T] = key.transpose(0, 2, 1, 3)
        new.store.value[:, :, L:L + T] = value.transpose(0, 2, 1, 3)
        return new

    def _copy_rows(self, index, capacity: int) -> KVStore:
        """A new store of ``capacity`` rows holding this cache's rows (of batch rows ``index``, a
        backend int64 array, or all of them when None)."""
        xp, src, L = self.device.backend, self.store, self.length
        B = src.key.shape[0] if index is None else index.shape[0]
        shape = (B, src.key.shape[1], capacity, src.key.shape[3])
        new = KVStore(xp.empty(shape, src.key.dtype), xp.empty(shape, src.key.dtype), L)
        for dst, buf in ((new.key, src.key), (new.value, src.value)):
            dst[:, :, :L] = buf[:, :, :L] if index is None else buf[:, :, :L][index]
        return new

    def reorder(self, index: Tensor) -> "KVCache":
        """A cache of the batch rows ``index`` (an int64 Tensor), in that order; the buffers keep
        their spare capacity, so the next append after a reorder does not reallocate."""
        store = self._copy_rows(index._data, self.store.capacity)
        return KVCache.of_store(store, self.length, self.owner, self.static, self.device)

    def __repr__(self) -> str:
        return f"KVCache(batch={self.batch_size}, length={self.length}, static={self.static})"
