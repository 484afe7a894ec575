"""The backend contract: the only array functions that ops, layers, optimizers and gradcheck call.

A backend is a class used as a namespace (static methods; it is never instantiated), one per
device type: ``CPUBackend`` (NumPy arrays, Numba kernels) and ``CUDABackend`` (``CudaArray``,
numba-cuda kernels). Both subclass :class:`Backend`, and a subclass that leaves one of the
primitives below unimplemented fails when it is defined (see ``Backend.__init_subclass__``), so
the contract is checked by the interpreter, not by convention.

**The array object** a backend's arrays must be is described in docs/architecture.md.

**Errors.** A primitive given bad input raises the same exception type with the same message on
every backend (the conformance suite in ``tests/backends`` checks this).
"""
from __future__ import annotations

from .index_errors import index_range_error

#: Every name a backend must define: ``Backend.__init_subclass__`` refuses a backend that
#: misses one, and ``tests/backends`` checks that each has the documented semantics.
PRIMITIVES = (
    # identity
    "name", "ndarray", "host_memory",
    # allocation and host transfer
    "asarray", "ascontiguousarray", "zeros", "ones", "full", "empty", "arange", "zeros_like",
    "ones_like", "from_numpy", "to_numpy", "copy",
    # storage questions
    "shares_storage", "is_contiguous",
    # elementwise
    "exp", "log", "sqrt", "abs", "tanh", "sign", "sigmoid", "maximum", "minimum", "where", "clip",
    "power", "isfinite", "logical_not", "errstate",
    # reductions
    "sum", "max", "min", "argmax", "argmin", "any", "all", "sum_to",
    # shape
    "reshape", "transpose", "broadcast_to", "broadcast_shapes", "concatenate", "split_at",
    "moveaxis",
    # gather / scatter
    "add_at", "index_extremes",
    # linear algebra
    "matmul", "addmm", "addmm_relu", "linear_backward",
    # random
    "dropout_mask",
    # many arrays per call
    "copy_many", "clip_grad_norm_flat",
    # fused kernels
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward", "layer_norm_forward", "layer_norm_backward",
    "attention_forward", "attention_backward", "adam_step",
    # kernel choice
    "set_kernels", "get_kernels",
)


class Backend:
    """The primitives, one docstring each. Subclasses bind each name to their implementation
    (usually ``staticmethod(function)``); the bodies here only document."""

    #: the device type this backend serves: ``"cpu"`` or ``"cuda"``
    name: str = ""
    #: the array class of this backend (``np.ndarray``, ``CudaArray``)
    ndarray: type = object
    #: True when the arrays live in host memory (``to_numpy`` is free and a host library such as
    #: MPI can read them directly); False for device memory
    host_memory: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = set()
        for k in cls.__mro__[:cls.__mro__.index(Backend)]:
            own.update(k.__dict__)   # the class dicts, not getattr: a lazy binding must not compile here
        missing = [n for n in PRIMITIVES if n not in own]
        if missing:
            raise TypeError(f"backend {cls.__name__} does not implement {', '.join(missing)}")

    # ------------------------------------------------------------ allocation and host transfer
    @staticmethod
    def asarray(a, dtype=None):
        """``a`` (an array of this backend, a NumPy array or a Python scalar/list) as an array of
        this backend, converted to ``dtype`` if given; no copy when nothing changes."""

    @staticmethod
    def ascontiguousarray(a):
        """``a`` if it is C-contiguous, else a C-contiguous copy."""

    @staticmethod
    def zeros(shape, dtype=float):
        """A new array of zeros."""

    @staticmethod
    def ones(shape, dtype=float):
        """A new array of ones."""

    @staticmethod
    def full(shape, fill_value, dtype=None):
        """A new array filled with ``fill_value``."""

    @staticmethod
    def empty(shape, dtype=float):
        """A new array with unspecified contents."""

    @staticmethod
    def arange(start, stop=None, step=1, dtype=None):
        """``start, start+step, ...`` below ``stop`` (NumPy's ``arange``)."""

    @staticmethod
    def zeros_like(a, dtype=None):
        """Zeros of ``a``'s shape (and dtype unless given)."""

    @staticmethod
    def ones_like(a, dtype=None):
        """Ones of ``a``'s shape (and dtype unless given)."""

    @staticmethod
    def from_numpy(a, copy=False):
        """The host NumPy array ``a`` on this device. With ``copy=False`` the result may share
        memory with ``a`` (it does on the CPU), so pass arrays the caller owns; ``copy=True``
        always gives fresh memory."""

    @staticmethod
    def to_numpy(a):
        """A host NumPy array with ``a``'s values (on the CPU: ``a`` itself; do not write to it)."""

    @staticmethod
    def copy(a):
        """A new C-contiguous array with ``a``'s values."""

    # ------------------------------------------------------------ storage questions
    @staticmethod
    def shares_storage(a, b) -> bool:
        """True when ``a`` and ``b`` are the same array or views of one allocation (so an
        in-place change of one may change the other). Decided from view bookkeeping, not by
        comparing addresses element by element."""

    @staticmethod
    def is_contiguous(a) -> bool:
        """True when ``a``'s elements lie in row-major (C) order with no gaps."""

    # ------------------------------------------------------------ elementwise
    @staticmethod
    def exp(x):
        """e**x elementwise."""

    @staticmethod
    def log(x):
        """Natural logarithm elementwise (-inf at 0, nan below)."""

    @staticmethod
    def sqrt(x):
        """Square root elementwise."""

    @staticmethod
    def abs(x):
        """|x| elementwise."""

    @staticmethod
    def tanh(x):
        """tanh elementwise."""

    @staticmethod
    def sign(x):
        """-1, 0 or 1 elementwise (0 at 0)."""

    @staticmethod
    def sigmoid(x):
        """1/(1+e**-x) elementwise, without overflow for large |x|, in x's dtype."""

    @staticmethod
    def maximum(a, b):
        """Elementwise maximum with broadcasting (nan propagates)."""

    @staticmethod
    def minimum(a, b):
        """Elementwise minimum with broadcasting (nan propagates)."""

    @staticmethod
    def where(cond, a, b):
        """``a`` where the bool ``cond`` is True, else ``b`` (all three broadcast)."""

    @staticmethod
    def clip(a, lo, hi, out=None):
        """``a`` limited to [lo, hi] (either bound may be None); written into ``out`` if given
        (``out`` may be ``a``: an in-place clamp)."""

    @staticmethod
    def power(a, b):
        """a**b elementwise with broadcasting."""

    @staticmethod
    def isfinite(x):
        """Bool array: True where x is neither inf nor nan."""

    @staticmethod
    def logical_not(x):
        """Bool array: not x."""

    @staticmethod
    def errstate(**kwargs):
        """A context manager that silences (``divide="ignore"``, ...) floating-point warnings."""

    # ------------------------------------------------------------ reductions
    @staticmethod
    def sum(a, axis=None, keepdims=False, dtype=None):
        """Sum over ``axis`` (an int, a tuple or None for all)."""

    @staticmethod
    def max(a, axis=None, keepdims=False):
        """Maximum over ``axis``; ValueError for an empty reduction."""

    @staticmethod
    def min(a, axis=None, keepdims=False):
        """Minimum over ``axis``; ValueError for an empty reduction."""

    @staticmethod
    def argmax(a, axis=None, keepdims=False):
        """int64 index of the first maximum along ``axis`` (of the flattened array if None)."""

    @staticmethod
    def argmin(a, axis=None, keepdims=False):
        """int64 index of the first minimum along ``axis`` (of the flattened array if None)."""

    @staticmethod
    def any(a, axis=None, keepdims=False):
        """Logical or over ``axis``."""

    @staticmethod
    def all(a, axis=None, keepdims=False):
        """Logical and over ``axis``."""

    @staticmethod
    def sum_to(g, shape):
        """``g`` summed over its broadcast axes back down to ``shape`` (a gradient reduced to the
        shape of the input it belongs to); ``g`` itself when the shapes already agree."""

    # ------------------------------------------------------------ shape
    @staticmethod
    def reshape(a, shape):
        """``a`` with another shape (a view where the strides allow, else a copy)."""

    @staticmethod
    def transpose(a, axes=None):
        """A view of ``a`` with its axes permuted (reversed when ``axes`` is None)."""

    @staticmethod
    def broadcast_to(a, shape):
        """A read-only view of ``a`` broadcast to ``shape`` (stride 0 on new axes)."""

    @staticmethod
    def broadcast_shapes(*shapes):
        """The broadcast of the shapes; ValueError when they do not broadcast."""

    @staticmethod
    def concatenate(arrays, axis=0):
        """The arrays joined along ``axis`` (a new array)."""

    @staticmethod
    def split_at(a, indices_or_sections, axis=0):
        """``a`` cut along ``axis`` at the given indices (a list of views)."""

    @staticmethod
    def moveaxis(a, source, destination):
        """A view of ``a`` with axis ``source`` moved to ``destination``."""

    # ------------------------------------------------------------ gather / scatter
    @staticmethod
    def add_at(out, idx, values):
        """``out[idx] += values`` in place, where repeated indices accumulate (NumPy's
        ``np.add.at``): the backward of indexing and of embedding lookups."""

    @staticmethod
    def index_extremes(idx, ignore=None):
        """``(min, max)`` of the int64 array ``idx`` as Python ints, leaving out the entries equal
        to ``ignore`` when it is given (a loss's ``ignore_index``); None when no entry is left. On
        a device this is one launch and one read of two numbers back to the host."""

    @classmethod
    def index_grad(cls, shape, dtype, idx, g):
        """Zeros of ``shape`` / ``dtype`` with ``g`` placed at ``idx``, summed where an index
        array repeats a cell: the gradient of ``a[idx]`` with respect to ``a``. Written once over
        ``zeros``, item assignment and ``add_at``; a device may bind a version with fewer
        launches (the CUDA backend writes a basic index's gradient in one)."""
        out = cls.zeros(shape, dtype)
        items = idx if isinstance(idx, tuple) else (idx,)
        if all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items):
            out[idx] = g   # a basic index selects each cell at most once
        else:
            cls.add_at(out, idx, g)
        return out

    @classmethod
    def check_index_range(cls, idx, n: int, what: str, ignore=None) -> None:
        """Raise ``index_range_error(what, n, min, max, ignore)`` unless every element of the int64
        array ``idx`` other than ``ignore`` is in [0, n): eager here, over ``index_extremes``; a
        device may raise the same error at its next read back to the host instead."""
        extremes = cls.index_extremes(idx, ignore)
        error = None if extremes is None else index_range_error(what, n, extremes[0], extremes[1], ignore)
        if error is not None:
            raise error

    # ------------------------------------------------------------ linear algebra
    @staticmethod
    def matmul(a, b):
        """NumPy ``matmul``: batched, broadcast over leading axes; 1-D operands promoted and the
        added axis removed; a zero-length contraction (K = 0) gives zeros."""

    @staticmethod
    def addmm(bias, a, b):
        """``a @ b + bias`` for 2-D ``a`` (m, k), ``b`` (k, n) and a ``bias`` (n,) of their dtype:
        a Linear layer's forward, the bias added as part of the product (same values as
        ``y = matmul(a, b); y += bias``)."""

    @staticmethod
    def addmm_relu(bias, a, b):
        """``maximum(addmm(bias, a, b), 0)`` in one primitive (``bias`` may be None): Linear + ReLU."""

    @staticmethod
    def linear_backward(g, x, w, needs=(True, True, True), relu_out=None):
        """``(g @ w, g.T @ x, g.sum(0))``, None where ``needs`` is false; g masked by ``relu_out > 0`` if given."""

    # ------------------------------------------------------------ random
    @staticmethod
    def dropout_mask(shape, p: float, seed: int, dtype):
        """The inverted-dropout multiplier of ``shape``: each element 0 with probability ``p``,
        else 1/(1-p), drawn on this device from the 63-bit ``seed`` (the caller draws the seed
        from the global generator, so ``manual_seed`` fixes the mask; streams differ per device)."""

    # ------------------------------------------------------------ many arrays per call
    @staticmethod
    def copy_many(dsts, srcs) -> None:
        """``d[...] = s`` for every pair (a device batches them into few launches)."""

    @staticmethod
    def clip_grad_norm_flat(buf, max_norm: float, norm_type: float):
        """Scale the flat gradient buffer ``buf`` in place by min(1, max_norm / (norm + 1e-6)) and
        return the norm of order ``norm_type`` (a 0-d array of ``buf``'s dtype, computed in
        float64)."""

    # ------------------------------------------------------------ fused kernels
    @staticmethod
    def softmax_forward(x):
        """Softmax over the last axis (max-subtracted)."""

    @staticmethod
    def softmax_backward(y, dy):
        """The input gradient of softmax from its output ``y`` and output gradient ``dy``."""

    @staticmethod
    def log_softmax_forward(x):
        """Log-softmax over the last axis."""

    @staticmethod
    def log_softmax_backward(y, dy):
        """The input gradient of log-softmax from its output ``y`` and ``dy``."""

    @staticmethod
    def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
        """Per-row loss of (N, C) ``logits`` against int64 ``target`` and each row's
        log-sum-exp: ``(loss, lse)``; ignored rows give 0."""

    @staticmethod
    def cross_entropy_backward(logits, target, lse, dloss, ignore_index, label_smoothing):
        """The logits gradient of the per-row loss given its gradient ``dloss``."""

    @staticmethod
    def layer_norm_forward(x, weight, bias, eps):
        """Layer norm over the last axis: ``(y, mean, rstd)``."""

    @staticmethod
    def layer_norm_backward(dy, x, weight, mean, rstd):
        """``(dx, dweight, dbias)`` of layer norm."""

    @staticmethod
    def attention_forward(q, k, v, bias, is_causal, scale):
        """Fused scaled dot-product attention over (..., T, d): ``(out, lse)``; the score matrix
        is never stored whole."""

    @staticmethod
    def attention_backward(q, k, v, o, lse, do, bias, is_causal, scale):
        """``(dq, dk, dv)`` of fused attention from the saved ``o`` and ``lse``."""

    @staticmethod
    def packed_attention_forward(qkv, heads, bias, is_causal, scale):
        """Attention on a packed (B, T, 3·E) [Q|K|V] projection: ``(out (B, T, E), state)``; None: no kernel."""

    @staticmethod
    def packed_attention_backward(qkv, out, state, g, heads, bias, is_causal, scale):
        """The (B, T, 3·E) gradient of ``qkv`` from ``g``, the gradient of ``out``, and the forward's ``state``."""

    @staticmethod
    def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
        """One Adam / AdamW update of ``param`` and its two moments, in place."""

    # ------------------------------------------------------------ kernel choice
    @staticmethod
    def set_kernels(name: str) -> None:
        """Route the fused kernels to ``"numba"`` (this device's compiled kernels, the default)
        or ``"reference"`` (the plain NumPy oracle in ``minitrans.kernels.reference``)."""

    @staticmethod
    def get_kernels() -> str:
        """The current choice of ``set_kernels``."""
