"""The list of kernel specialisations the compile guard (``guard.py``) compiles: every kernel the
CUDA backend can launch, by the factories and dtypes its host wrappers use, one ``Spec`` each.

A kernel added to ``minitrans.kernels.cuda`` needs its entry here: ``tests/cuda/test_step_cost.py``
records the kernels a training step really launches and checks each one is listed.
"""
from __future__ import annotations

import dataclasses
import importlib
import sys

import numpy as np

LOCAL_BUDGET = 0  # bytes of per-thread local memory a kernel may use unless its spec says otherwise
_PKG = "minitrans.kernels.cuda"

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
INTS = (np.dtype(np.int64), np.dtype(np.int32))
NUMS = FLOATS + INTS
ALL = NUMS + (np.dtype(np.bool_),)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One kernel specialisation: ``getattr(module, factory)(*fargs)[index]`` compiled for
    ``argtypes``. ``dtype`` is the compute dtype (float32 specs are checked for ``.f64``)."""

    module: str
    factory: str
    fargs: tuple | None
    index: int | None
    argtypes: tuple
    dtype: str
    f64_reason: str | None = None
    local_budget: int = LOCAL_BUDGET

    def kernel(self):
        obj = getattr(_mod(self.module), self.factory)
        if self.fargs is not None:
            obj = obj(*self.fargs)
        if self.index is not None:
            obj = obj[self.index]
        return obj

    def label(self) -> str:
        from ._util import _kernel_name

        extra = "" if self.fargs is None else "(" + ", ".join(map(str, self.fargs)) + ")"
        return f"{_kernel_name(self.kernel())}{extra}[{', '.join(map(str, self.argtypes))}]"


# ---------------------------------------------------------------- the specialisations
def _types():
    from numba import types

    from ._util import MAX_DIMS, nb_dtype

    def array(dt, nd=1):
        return types.Array(nb_dtype(dt), nd, "C")

    def scalar(dt):
        return nb_dtype(dt)

    return array, scalar, types.int64, types.boolean, types.UniTuple(types.int64, MAX_DIMS)


def _mod(name):
    """A kernel module (``from . import x`` could give the function of the same name), or a
    samples module loaded by ``load_samples``."""
    if name in sys.modules and name.startswith("_guard_samples"):
        return sys.modules[name]
    return importlib.import_module(f"{_PKG}.{name}")


def _cast_reason(src, dst):
    if np.dtype(np.float64) in (np.dtype(src), np.dtype(dst)) and np.dtype(src) != np.dtype(dst):
        return "a cast from or to float64 converts in double precision by definition"
    return None


def _elementwise_specs():
    elementwise = _mod("elementwise")

    array, scalar, int64, boolean, dims = _types()
    out = []

    from numba import types

    uint32 = types.uint32

    def map_spec(op, src, dst):
        out.append(Spec("elementwise", "_map_kernel", (op, src), None,
                        (array(dst), array(src), int64, dims, dims), src.name, _cast_reason(src, dst)))
        if src.kind == "f":   # the contiguous fast path (float inputs)
            out.append(Spec("elementwise", "_map_contig_kernel", (op, src), None,
                            (array(dst), array(src), uint32), src.name, _cast_reason(src, dst)))

    def zip_spec(op, dt, res, a_dt=None, b_dt=None):
        a, b = array(a_dt or dt), array(b_dt or dt)
        out.append(Spec("elementwise", "_zip_kernel", (op, dt), None,
                        (array(res), a, b, int64, dims, dims, dims), dt.name))
        if dt.kind == "f":
            out.append(Spec("elementwise", "_zip_contig_kernel", (op, dt), None,
                            (array(res), a, b, uint32, uint32, uint32), dt.name))

    for dt in FLOATS:
        for op in elementwise.UNARY:
            map_spec(op, dt, dt)
    for dt in INTS:
        for op in ("neg", "abs", "sign"):
            map_spec(op, dt, dt)
    for src in ALL:  # astype / operand casts
        for dst in NUMS:
            if src != dst:
                map_spec("identity", src, dst)
    for dt in ALL:  # copies into a contiguous destination (array.copy_into) are identity maps
        map_spec("identity", dt, dt)
    arith = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
    for dt in NUMS:
        for op in arith:
            zip_spec(op, dt, np.dtype(np.float64) if (op == "div" and dt.kind == "i") else dt)
    for op in ("add", "mul", "maximum", "minimum"):
        zip_spec(op, np.dtype(np.bool_), np.dtype(np.bool_))
    for op in sorted(elementwise.MASK_OPS):   # a float op with a bool mask operand, either side
        for dt in FLOATS:
            zip_spec(op, dt, dt, a_dt=np.dtype(np.bool_))
            zip_spec(op, dt, dt, b_dt=np.dtype(np.bool_))
    for dt in ALL:
        for op in sorted(elementwise.COMPARISONS):
            zip_spec(op, dt, np.dtype(np.bool_))
    for dt in NUMS:
        out.append(Spec("elementwise", "_clamp_kernel", (dt,), None,
                        (array(dt), array(dt), int64, dims, dims, dims, scalar(dt), scalar(dt), boolean, boolean),
                        dt.name))
    for dt in ALL:
        out.append(Spec("elementwise", "_where_kernel", None, None,
                        (array(dt), array(np.bool_), array(dt), array(dt), int64, dims, dims, dims, dims),
                        dt.name))
    return out


def _array_specs():
    array, scalar, int64, boolean, dims = _types()
    bool_ = np.dtype(np.bool_)
    i64 = np.dtype(np.int64)
    out = []
    for dt in ALL:
        out.append(Spec("array", "_fill_kernel", None, None, (array(dt), scalar(dt), int64), dt.name))
        out.append(Spec("array", "_gather_kernel", None, None,
                        (array(dt), array(dt), array(i64), int64, dims, dims, dims, scalar(dt)), dt.name))
        out.append(Spec("array", "_scatter_set_kernel", None, None,
                        (array(dt), array(dt), array(i64), int64, dims, dims, dims, dims), dt.name))
        for src in ALL:
            out.append(Spec("array", "_copy_kernel", None, None,
                            (array(dt), array(src), int64, dims, dims, dims), src.name,
                            _cast_reason(src, dt)))
    for dt in NUMS:
        out.append(Spec("array", "_arange_kernel", (dt,), None, (array(dt), scalar(dt), scalar(dt), int64),
                        dt.name))
        out.append(Spec("array", "_scatter_add_kernel", None, None,
                        (array(dt), array(dt), array(i64), int64, dims, dims, dims, dims), dt.name))
    out.append(Spec("array", "_lmap", ("not",), None, (array(bool_), array(bool_), int64, dims, dims), "bool"))
    for dt in FLOATS:
        out.append(Spec("array", "_lmap", ("isfinite",), None, (array(bool_), array(dt), int64, dims, dims),
                        dt.name))
        out.append(Spec("array", "_dropout_kernel", None, None,
                        (array(dt), int64, int64, int64, int64, scalar(dt), scalar(dt)), dt.name))
    for op in ("and", "or", "xor"):
        out.append(Spec("array", "_lzip", (op,), None,
                        (array(bool_), array(bool_), array(bool_), int64, dims, dims, dims), "bool"))
    from numba import types

    array_module = _mod("array")
    for dt in FLOATS:
        many = types.UniTuple(array(dt), array_module.MANY)
        offsets = types.UniTuple(int64, array_module.MANY)
        out.append(Spec("array", "_copy_many_kernel", None, None, (many, many, offsets, int64), dt.name))
    for dt in INTS:
        out.append(Spec("array", "_index_linear_kernel", None, None,
                        (array(i64), array(dt), int64, int64, int64, dims, dims), dt.name))
    return out + _indexed_specs()


def _indexed_specs():
    array, scalar, int64, boolean, dims = _types()
    i64 = np.dtype(np.int64)
    out = []
    for dt in ALL:
        out.append(Spec("indexed", "_pad_kernel", None, None,
                        (array(dt), array(dt), int64, dims, dims, dims, dims, dims, scalar(dt)), dt.name))
        out.append(Spec("indexed", "_take_kernel", None, None,
                        (array(dt), array(dt), array(i64), int64, dims, dims, dims, int64, int64, int64,
                         scalar(dt)), dt.name))
        out.append(Spec("indexed", "_put_kernel", None, None,
                        (array(dt), array(dt), array(i64), int64, dims, dims, dims, dims, int64, int64, int64),
                        dt.name))
    for dt in NUMS:
        out.append(Spec("indexed", "_put_add_kernel", None, None,
                        (array(dt), array(dt), array(i64), int64, dims, dims, dims, dims, int64, int64, int64),
                        dt.name))
    return out


def _reduce_specs():
    reduce_module = _mod("reduce")
    from ._util import SUM

    array, scalar, int64, boolean, dims = _types()
    out = []
    i64 = np.dtype(np.int64)
    pairs = [(code, dt, dt) for dt in (np.dtype(np.float32), np.dtype(np.float64), i64)
             for code in sorted(set(reduce_module._OPS.values()))]
    pairs += [(SUM, i64, src) for src in reduce_module.SUM_TO_INT64]   # bool / int32 sums in int64
    for code, dt, src in pairs:
        out.append(Spec("reduce", "_reduce_kernel", (code, reduce_module.THREADS, dt, src), None,
                        (array(dt), array(src), int64, int64, scalar(dt), dims, dims, dims, dims, boolean),
                        src.name))
    for dt in ALL:
        out.append(Spec("reduce", "_argmax_kernel", (reduce_module.THREADS, dt), None,
                        (array(np.int64), array(dt), int64, dims, dims, int64), dt.name))
    return out


def _nn_specs():
    softmax, cross_entropy, layer_norm, matmul = (_mod(m) for m in ("softmax", "cross_entropy", "layer_norm",
                                                                      "matmul"))

    array, scalar, int64, boolean, dims = _types()
    i64 = np.dtype(np.int64)
    out = []
    for dt in FLOATS:
        n = dt.name
        for f in softmax.both_configs(softmax.config, dt):  # short rows (a warp each) and long rows
            f = f + (dt,)
            out.append(Spec("softmax", "_kernels", f, 0, (array(dt, 2), array(dt, 2), boolean), n))
            out.append(Spec("softmax", "_kernels", f, 1, (array(dt, 2), array(dt, 2), array(dt, 2), boolean), n))
        for f in softmax.both_configs(cross_entropy.config, dt):
            f = f + (dt,)
            out.append(Spec("cross_entropy", "_kernels", f, 0,
                            (array(dt), array(dt), array(dt, 2), array(i64), int64, scalar(dt)), n))
            out.append(Spec("cross_entropy", "_kernels", f, 1,
                            (array(dt, 2), array(dt, 2), array(i64), array(dt), array(dt), int64, scalar(dt)), n))
        for k, f in enumerate(softmax.both_configs(layer_norm.config, dt)):
            f = f + (dt,)
            out.append(Spec("layer_norm", "_kernels", f, 0,
                            (array(dt, 2), array(dt), array(dt), array(dt, 2), array(dt), array(dt), boolean,
                             boolean, scalar(dt)), n))
            out.append(Spec("layer_norm", "_kernels", f, 1,
                            (array(dt, 2), array(dt, 2), array(dt, 2), array(dt), boolean, array(dt), array(dt)),
                            n))
            if k == 0:  # the column kernel does not depend on the row configuration
                out.append(Spec("layer_norm", "_kernels", f, 2,
                                (array(dt), array(dt), array(dt, 2), array(dt, 2), array(dt), array(dt), boolean),
                                n))
        out.append(Spec("adam", "_adam_kernel", (dt,), None, (array(dt),) * 4 + (scalar(dt),) * 7 + (boolean,), n))
    out.append(Spec("index_range", "_extremes_kernel", (_mod("index_range").THREADS,), None,
                    (array(np.dtype(np.int64)), array(np.dtype(np.int64)), int64, int64, boolean), "int64"))
    clip = _mod("clip")
    for dt in FLOATS:
        out.append(Spec("clip", "_clip_kernel", (clip.THREADS, dt), None,
                        (array(dt), array(dt), int64, scalar(dt), boolean, scalar(dt)), dt.name))
    for dt in NUMS:
        for tiles in matmul.tile_configs():  # big tiles, and half-size ones for small products
            out.append(Spec("matmul", "_matmul_kernel", (dt,) + tiles, 0,
                            (array(dt), array(dt), array(dt), int64, int64, int64, dims, dims, dims, int64, int64,
                             int64, int64), dt.name))
    return out


def _attention_specs():
    attention = _mod("attention")

    array, scalar, int64, boolean, dims = _types()
    out = []
    for dt in FLOATS:
        bias = (array(dt), int64, int64, int64, boolean, boolean, scalar(dt))
        # every head dim the wrappers compile for; the per-thread row slices are in registers
        # (local budget 0: the default)
        for dpad in (16, 32, 64, 128, 256):
            f = (dt,) + attention.layout(dpad, dpad, dt.itemsize, backward=False)
            out.append(Spec("attention", "_forward_kernel", f, None,
                            (array(dt, 3), array(dt, 2), array(dt, 3), array(dt, 3), array(dt, 3)) + bias,
                            dt.name))
            f = (dt,) + attention.layout(dpad, dpad, dt.itemsize, backward=True)
            out.append(Spec("attention", "_backward_kernel", f, None,
                            (array(dt, 3),) * 6 + (array(dt, 2), array(dt, 3), array(dt, 2)) + bias, dt.name))
        out.append(Spec("attention", "_prepare_kernel", (dt,), None,
                        (array(dt, 2), array(dt, 3), array(dt, 3), array(dt, 3)), dt.name))
    return out


def specs() -> list[Spec]:
    """Every kernel specialisation the CUDA backend can launch."""
    return _elementwise_specs() + _array_specs() + _reduce_specs() + _nn_specs() + _attention_specs()


def launch_keys(spec_list=None) -> set:
    """``(kernel name, argument types)`` of every spec: what ``_util.record_launches`` records
    for a launch of that specialisation."""
    from ._util import _kernel_name

    return {(_kernel_name(s.kernel()), tuple(str(t) for t in s.argtypes)) for s in (spec_list or specs())}
