"""Every primitive of the backend contract (``minitrans.backends.protocol.PRIMITIVES``) has the
same semantics on every backend: the same values as NumPy, the same dtypes, the same views
(``shares_storage``) and contiguity (``is_contiguous``), and on bad input the same exception
type with the same message.

Each case runs on the backend of the ``device`` fixture (cpu, and cuda under Numba's simulator
where numba-cuda is installed: tiny shapes). Inputs are NumPy arrays moved to the device with
``from_numpy``; results come back with ``to_numpy`` and are compared with a NumPy expression
written here (the fused kernels with the NumPy oracle ``minitrans.kernels.reference``).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from minitrans.backends import get_backend
from minitrans.backends.protocol import PRIMITIVES, Backend
from minitrans.kernels import reference as ref

RNG = np.random.default_rng(0)
F32 = RNG.standard_normal((2, 3)).astype(np.float32)
F64 = RNG.standard_normal((2, 3))
POS = np.abs(F64) + 0.5
B3 = F64[None, :, :] * np.array([1.0, -2.0])[:, None, None]          # (2, 2, 3)


@pytest.fixture
def backend(device):
    return get_backend(device)


def host(b, r):
    """Results back on the host, nested tuples/lists kept (0-d results as 0-d arrays)."""
    if isinstance(r, (tuple, list)):
        return type(r)(host(b, x) for x in r)
    if r is None or isinstance(r, (bool, int, float, str)):
        return r
    return np.asarray(b.to_numpy(r))


def assert_same(got, want, what=""):
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), f"{what}: {got!r} vs {want!r}"
        for k, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{what}[{k}]")
        return
    want = np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    if want.dtype.kind == "f":
        tol = 2e-6 if want.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


# ----------------------------------------------------------------------------- value cases
# primitive name -> list of (run(B, *device arrays), NumPy reference(*host arrays), host inputs)
def _softmax_np(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


_IDX = np.array([0, 2, 2, 1], np.int64)
_Q = RNG.standard_normal((1, 3, 2))
_K = RNG.standard_normal((1, 4, 2))
_V = RNG.standard_normal((1, 4, 2))
_DO = RNG.standard_normal((1, 3, 2))
_LOGITS = RNG.standard_normal((3, 4))
_TARGET = np.array([1, -100, 3], np.int64)

VALUE_CASES = {
    "asarray": [(lambda B, a: B.asarray(a, dtype=np.float32), lambda a: a.astype(np.float32), [F64]),
                (lambda B: B.asarray([[1, 2], [3, 4]]), lambda: np.array([[1, 2], [3, 4]]), [])],
    "ascontiguousarray": [(lambda B, a: B.ascontiguousarray(B.transpose(a)), lambda a: a.T.copy(), [F64])],
    "zeros": [(lambda B: B.zeros((2, 3), np.float32), lambda: np.zeros((2, 3), np.float32), []),
              (lambda B: B.zeros(4), lambda: np.zeros(4), [])],
    "ones": [(lambda B: B.ones((2, 1), np.int64), lambda: np.ones((2, 1), np.int64), [])],
    "full": [(lambda B: B.full((2, 2), 1.5, np.float32), lambda: np.full((2, 2), 1.5, np.float32), [])],
    "empty": [(lambda B: B.empty((3, 2), np.float32).shape, lambda: (3, 2), [])],
    "arange": [(lambda B: B.arange(5), lambda: np.arange(5), []),
               (lambda B: B.arange(1, 7, 2, dtype=np.float32), lambda: np.arange(1, 7, 2, dtype=np.float32), [])],
    "zeros_like": [(lambda B, a: B.zeros_like(a), np.zeros_like, [F32]),
                   (lambda B, a: B.zeros_like(a, dtype=np.int64), lambda a: np.zeros_like(a, np.int64), [F32])],
    "ones_like": [(lambda B, a: B.ones_like(a), np.ones_like, [F64])],
    "from_numpy": [(lambda B: B.from_numpy(F32), lambda: F32, []),
                   (lambda B: B.from_numpy(np.arange(3), copy=True), lambda: np.arange(3), [])],
    "to_numpy": [(lambda B, a: B.to_numpy(a), lambda a: a, [F32])],
    "copy": [(lambda B, a: B.copy(B.transpose(a)), lambda a: a.T.copy(), [F64])],
    "exp": [(lambda B, a: B.exp(a), np.exp, [F32]), (lambda B, a: B.exp(a), np.exp, [F64])],
    "log": [(lambda B, a: B.log(a), np.log, [POS]), (lambda B, a: B.log(a), np.log, [POS.astype(np.float32)])],
    "sqrt": [(lambda B, a: B.sqrt(a), np.sqrt, [POS])],
    "abs": [(lambda B, a: B.abs(a), np.abs, [F32]), (lambda B, a: B.abs(a), np.abs, [np.array([-3, 2], np.int64)])],
    "tanh": [(lambda B, a: B.tanh(a), np.tanh, [F64])],
    "sign": [(lambda B, a: B.sign(a), np.sign, [np.array([-2.0, 0.0, 3.0])])],
    "sigmoid": [(lambda B, a: B.sigmoid(a), lambda a: (0.5 * (1 + np.tanh(0.5 * a.astype(np.float64)))).astype(a.dtype),
                 [np.array([-800.0, -1.0, 0.0, 2.0, 800.0], np.float32)])],
    "maximum": [(lambda B, a, b: B.maximum(a, b), np.maximum, [F64, F64[:1] * 0.5]),
                (lambda B, a, b: B.maximum(a, b), np.maximum, [np.array([np.nan, 1.0]), np.array([0.0, np.nan])])],
    "minimum": [(lambda B, a, b: B.minimum(a, b), np.minimum, [F32, F32[:, :1]])],
    "where": [(lambda B, c, a, b: B.where(c, a, b), np.where, [F64 > 0, F64, -F64[:1]])],
    "clip": [(lambda B, a: B.clip(a, -0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), [F32]),
             (lambda B, a: B.clip(a, None, 0.2), lambda a: np.clip(a, None, 0.2), [F64]),
             (lambda B, a: (B.clip(a, 0.0, None, out=a), a)[1], lambda a: np.clip(a, 0.0, None), [F64])],
    "power": [(lambda B, a, b: B.power(a, b), np.power, [POS, np.array([2.0, 0.5, -1.0])])],
    "isfinite": [(lambda B, a: B.isfinite(a), np.isfinite, [np.array([1.0, np.inf, -np.inf, np.nan])])],
    "logical_not": [(lambda B, a: B.logical_not(a), np.logical_not, [np.array([True, False])])],
    "sum": [(lambda B, a: B.sum(a), np.sum, [F64]), (lambda B, a: B.sum(a, axis=0), lambda a: a.sum(0), [F32]),
            (lambda B, a: B.sum(a, axis=(0, 2), keepdims=True), lambda a: a.sum((0, 2), keepdims=True), [B3]),
            (lambda B, a: B.sum(a, dtype=np.float64), lambda a: a.sum(dtype=np.float64), [F32])],
    "max": [(lambda B, a: B.max(a, axis=1), lambda a: a.max(1), [F64]),
            (lambda B, a: B.max(a, axis=-1, keepdims=True), lambda a: a.max(-1, keepdims=True), [F32])],
    "min": [(lambda B, a: B.min(a), np.min, [F64])],
    "argmax": [(lambda B, a: B.argmax(a, axis=1), lambda a: a.argmax(1), [F64]),
               (lambda B, a: B.argmax(a), lambda a: np.argmax(a), [np.array([1.0, 3.0, 3.0, 2.0])])],
    "argmin": [(lambda B, a: B.argmin(a, axis=0), lambda a: a.argmin(0), [F32])],
    "any": [(lambda B, a: B.any(a, axis=1), lambda a: a.any(1), [F64 > 1.0])],
    "all": [(lambda B, a: B.all(a), np.all, [F64 > -10.0])],
    "sum_to": [(lambda B, a: B.sum_to(a, (1, 3)), lambda a: a.sum(0, keepdims=True), [F64]),
               (lambda B, a: B.sum_to(a, (3,)), lambda a: a.sum((0, 1)), [B3]),
               (lambda B, a: B.sum_to(a, (2, 3)), lambda a: a, [F64])],
    "reshape": [(lambda B, a: B.reshape(a, (3, 2)), lambda a: a.reshape(3, 2), [F64]),
                (lambda B, a: B.reshape(B.transpose(a), (6,)), lambda a: a.T.reshape(6), [F32])],
    "transpose": [(lambda B, a: B.transpose(a), np.transpose, [F64]),
                  (lambda B, a: B.transpose(a, (1, 2, 0)), lambda a: a.transpose(1, 2, 0), [B3])],
    "broadcast_to": [(lambda B, a: B.broadcast_to(a, (2, 2, 3)), lambda a: np.broadcast_to(a, (2, 2, 3)), [F32])],
    "broadcast_shapes": [(lambda B: B.broadcast_shapes((2, 1), (3,)), lambda: (2, 3), [])],
    "concatenate": [(lambda B, a, b: B.concatenate([a, b], axis=1), lambda a, b: np.concatenate([a, b], 1),
                     [F64, F64[:, :1]])],
    "split_at": [(lambda B, a: B.split_at(a, [1, 2], axis=1), lambda a: np.split(a, [1, 2], axis=1), [F64])],
    "moveaxis": [(lambda B, a: B.moveaxis(a, 0, -1), lambda a: np.moveaxis(a, 0, -1), [B3])],
    "add_at": [(lambda B, o, i, v: (B.add_at(o, i, v), o)[1],
                lambda o, i, v: (np.add.at(o, i, v), o)[1], [np.zeros((3, 3)), _IDX, np.ones((4, 3))])],
    "check_index_range": [(lambda B, i: B.check_index_range(i, 3, "lookup"), lambda i: None, [_IDX])],
    "matmul": [(lambda B, a, b: B.matmul(a, b), np.matmul, [F64, F64.T.copy()]),
               (lambda B, a, b: B.matmul(a, b), np.matmul, [B3, F64.T.copy()]),
               (lambda B, a, b: B.matmul(a, b), np.matmul, [F64[0].copy(), F64.T.copy()]),
               (lambda B, a, b: B.matmul(a, b), np.matmul, [F64, F64[0].copy()]),
               (lambda B, a, b: B.matmul(a, b), np.matmul, [np.zeros((2, 0)), np.zeros((0, 3))]),
               (lambda B, a, b: B.matmul(a, b), np.matmul, [F32, F64.T.copy()])],
    "addmm": [(lambda B, c, a, b: B.addmm(c, a, b), lambda c, a, b: a @ b + c, [F64[0, :2].copy(), F64, F64.T.copy()]),
              (lambda B, c, a, b: B.addmm(c, a, b), lambda c, a, b: a @ b + c,
               [F32[1], F32.T.copy(), F32.copy()])],
    "addmm_relu": [(lambda B, c, a, b: B.addmm_relu(c, a, b), lambda c, a, b: np.maximum(a @ b + c, 0),
                    [F64[0, :2].copy(), F64, F64.T.copy()]),
                   (lambda B, c, a, b: B.addmm_relu(c, a, b), lambda c, a, b: np.maximum(a @ b + c, 0),
                    [F32[0].copy(), F32.T.copy(), F32.copy()])],
    "linear_backward": [(lambda B, g, x, w: B.linear_backward(g, x, w), lambda g, x, w: (g @ w, g.T @ x, g.sum(0)),
                         [F64.T.copy(), F64.T.copy()[:, :2], F64[:, :2].copy()]),
                        (lambda B, g, x, w, y: B.linear_backward(g, x, w, (True, False, True), y),
                         lambda g, x, w, y: ((g * (y > 0)) @ w, None, (g * (y > 0)).sum(0)),
                         [F32.T.copy(), F32.T.copy(), F32.copy(), F32.T.copy()])],
    "copy_many": [(lambda B, d1, d2, s1, s2: (B.copy_many([d1, d2], [s1, s2]), (d1, d2))[1],
                   lambda d1, d2, s1, s2: (s1, s2), [np.zeros((2, 3)), np.zeros(3, np.float32), F64, F32[0]])],
    "clip_grad_norm_flat": [
        (lambda B, g: (B.clip_grad_norm_flat(g, 1.0, 2.0), g),
         lambda g: (np.asarray(np.sqrt((g.astype(np.float64) ** 2).sum()), g.dtype),
                    g * np.float32(1.0 / (np.sqrt((g.astype(np.float64) ** 2).sum()) + 1e-6))),
         [np.array([3.0, -4.0, 0.0], np.float32)]),
        (lambda B, g: (B.clip_grad_norm_flat(g, 10.0, float("inf")), g),
         lambda g: (np.asarray(4.0), g), [np.array([3.0, -4.0, 0.0])])],
    "softmax_forward": [(lambda B, x: B.softmax_forward(x), _softmax_np, [F64]),
                        (lambda B, x: B.softmax_forward(x), lambda x: _softmax_np(x).astype(np.float32), [F32])],
    "softmax_backward": [(lambda B, y, dy: B.softmax_backward(y, dy), ref.softmax_backward,
                          [_softmax_np(F64), F64[::-1].copy()])],
    "log_softmax_forward": [(lambda B, x: B.log_softmax_forward(x), lambda x: np.log(_softmax_np(x)), [F64])],
    "log_softmax_backward": [(lambda B, y, dy: B.log_softmax_backward(y, dy), ref.log_softmax_backward,
                              [np.log(_softmax_np(F64)), F64[::-1].copy()])],
    "cross_entropy_forward": [(lambda B, x, t: B.cross_entropy_forward(x, t, -100, 0.1),
                               lambda x, t: ref.cross_entropy_forward(x, t, -100, 0.1), [_LOGITS, _TARGET])],
    "cross_entropy_backward": [
        (lambda B, x, t, lse, d: B.cross_entropy_backward(x, t, lse, d, -100, 0.0),
         lambda x, t, lse, d: ref.cross_entropy_backward(x, t, lse, d, -100, 0.0),
         [_LOGITS, _TARGET, ref.cross_entropy_forward(_LOGITS, _TARGET, -100, 0.0)[1], np.ones(3)])],
    "layer_norm_forward": [(lambda B, x, w, b: B.layer_norm_forward(x, w, b, 1e-5),
                            lambda x, w, b: ref.layer_norm_forward(x, w, b, 1e-5), [F64, POS[0], F64[1]])],
    "layer_norm_backward": [
        (lambda B, dy, x, w, m, r: B.layer_norm_backward(dy, x, w, m, r), ref.layer_norm_backward,
         [F64[::-1].copy(), F64, POS[0], *ref.layer_norm_forward(F64, POS[0], F64[1], 1e-5)[1:]])],
    "attention_forward": [(lambda B, q, k, v: B.attention_forward(q, k, v, None, False, 0.5),
                           lambda q, k, v: ref.attention_forward(q, k, v, None, False, 0.5), [_Q, _K, _V]),
                          (lambda B, q, k, v: B.attention_forward(q, k, v, None, True, 0.5),
                           lambda q, k, v: ref.attention_forward(q, k, v, None, True, 0.5), [_Q, _K, _V])],
    "attention_backward": [
        (lambda B, q, k, v, o, lse, do: B.attention_backward(q, k, v, o, lse, do, None, False, 0.5),
         lambda q, k, v, o, lse, do: ref.attention_backward(q, k, v, o, lse, do, None, False, 0.5),
         [_Q, _K, _V, *ref.attention_forward(_Q, _K, _V, None, False, 0.5), _DO])],
    "adam_step": [
        (lambda B, p, g, m, v: (B.adam_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 0.01, 3, True), (p, m, v))[1],
         lambda p, g, m, v: (ref.adam_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 0.01, 3, True), (p, m, v))[1],
         [F64[0].copy(), F64[1].copy(), POS[0] * 0.1, POS[1] * 0.01])],
}


def _value_params():
    for name, cases in VALUE_CASES.items():
        for k, case in enumerate(cases):
            yield pytest.param(name, case, id=f"{name}-{k}")


@pytest.mark.parametrize("name,case", list(_value_params()))
def test_primitive_values_and_dtypes_match_numpy(backend, name, case):
    run, want_fn, inputs = case
    want = want_fn(*[x.copy() for x in inputs])
    dev = [backend.from_numpy(x.copy(), copy=True) for x in inputs]
    got = run(backend, *dev)
    if isinstance(want, np.ndarray) and want.ndim >= 1 and name != "to_numpy":   # results stay on the device
        assert isinstance(got, backend.ndarray), f"{name}: result is a {type(got).__name__}, not {backend.ndarray}"
    assert_same(host(backend, got), want, name)


def test_every_primitive_has_a_value_case_or_a_test_of_its_own():
    tested_elsewhere = {"name", "ndarray", "host_memory", "shares_storage", "is_contiguous", "errstate",
                        "dropout_mask", "set_kernels", "get_kernels", "index_extremes"}   # each has a test below
    missing = [n for n in PRIMITIVES if n not in VALUE_CASES and n not in tested_elsewhere]
    assert not missing, f"primitives without a conformance case: {missing}"


def test_index_extremes_as_host_numbers_leaving_out_the_ignored_value(backend):
    def extremes(values, ignore=None):
        return backend.index_extremes(backend.from_numpy(np.array(values, np.int64), copy=True), ignore)

    assert extremes([0, 2, 2, 1]) == (0, 2)
    assert extremes([[4], [-3]]) == (-3, 4)                      # any shape
    assert extremes([-100, 3, 5, -100], -100) == (3, 5)          # a loss's ignore_index left out
    assert extremes([-100, -100], -100) is None                  # nothing left
    assert extremes(np.zeros(0, np.int64)) is None               # nothing at all
    assert all(type(v) is int for v in extremes([7, 1]))


# ----------------------------------------------------------------------------- identity
def test_backend_identity(backend, device):
    assert issubclass(backend, Backend)
    assert backend.name == device
    assert isinstance(backend.host_memory, bool)
    assert isinstance(backend.from_numpy(F32), backend.ndarray)
    assert isinstance(backend.zeros(3), backend.ndarray)


def test_every_backend_subclasses_backend_and_implements_every_primitive(device):
    b = get_backend(device)
    assert Backend in b.__mro__
    own = set()
    for k in b.__mro__[:b.__mro__.index(Backend)]:
        own.update(k.__dict__)
    assert [n for n in PRIMITIVES if n not in own] == []


def test_a_backend_missing_a_primitive_fails_when_defined():
    with pytest.raises(TypeError, match="does not implement matmul"):
        type("Incomplete", (Backend,), {n: staticmethod(lambda *a: None) for n in PRIMITIVES if n != "matmul"})
    complete = type("Complete", (Backend,), {n: staticmethod(lambda *a: None) for n in PRIMITIVES})
    assert issubclass(complete, Backend)


# ----------------------------------------------------------------------------- views and contiguity
def test_views_share_storage_and_copies_do_not(backend):
    B = backend
    a = B.from_numpy(np.arange(12.0).reshape(3, 4), copy=True)
    other = B.from_numpy(np.arange(12.0).reshape(3, 4), copy=True)
    views = {"slice": a[1:], "step": a[:, ::2], "int": a[0], "reshape": B.reshape(a, (4, 3)),
             "transpose": B.transpose(a), "broadcast": B.broadcast_to(a, (2, 3, 4)),
             "moveaxis": B.moveaxis(a, 0, 1), "split": B.split_at(a, [1], axis=0)[1],
             "view_of_view": B.transpose(a[1:])[::2]}
    for what, v in views.items():
        assert B.shares_storage(a, v) and B.shares_storage(v, a), f"{what} is a view of a"
    assert B.shares_storage(views["slice"], views["transpose"])        # two views of one allocation
    assert B.shares_storage(a, a)
    copies = {"copy": B.copy(a), "other": other, "ascontiguous_of_transpose": B.ascontiguousarray(B.transpose(a)),
              "concatenate": B.concatenate([a, a]), "elementwise": a + 1.0, "from_numpy": B.from_numpy(np.ones(3))}
    for what, c in copies.items():
        assert not B.shares_storage(a, c), f"{what} is not a view of a"


def test_writing_through_a_view_changes_the_base(backend):
    B = backend
    a = B.zeros((2, 3))
    v = B.transpose(a)[1]
    v[...] = 5.0
    assert_same(B.to_numpy(a), np.array([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]]))


def test_contiguity(backend):
    B = backend
    a = B.from_numpy(np.arange(24.0).reshape(2, 3, 4), copy=True)
    contiguous = {"fresh": a, "leading slice": a[1:], "int index": a[0], "reshape": B.reshape(a, (6, 4)),
                  "copy of transpose": B.copy(B.transpose(a)), "ascontiguousarray": B.ascontiguousarray(a[:, ::2])}
    strided = {"transpose": B.transpose(a), "step": a[:, ::2], "inner slice": a[:, :, 1:],
               "broadcast": B.broadcast_to(a[:, :1], (2, 3, 4)), "moveaxis": B.moveaxis(a, 2, 0)}
    for what, x in contiguous.items():
        assert B.is_contiguous(x), what
    for what, x in strided.items():
        assert not B.is_contiguous(x), what
    assert B.ascontiguousarray(a) is a or B.shares_storage(B.ascontiguousarray(a), a)


def test_from_numpy_copy_is_independent_of_the_host_array(backend):
    h = np.arange(3.0)
    d = backend.from_numpy(h, copy=True)
    h[0] = 100.0
    assert_same(backend.to_numpy(d), np.arange(3.0))


# ----------------------------------------------------------------------------- errors: same type, same message
ERROR_CASES = {
    "max of an empty array": lambda B: B.max(B.zeros((0,))),
    "min of an empty axis": lambda B: B.min(B.zeros((2, 0)), axis=1),
    "clip without bounds": lambda B: B.clip(B.zeros(2), None, None),
    "broadcast_shapes": lambda B: B.broadcast_shapes((2, 3), (4,)),
    "broadcast_to": lambda B: B.broadcast_to(B.zeros((2, 3)), (4, 3)),
    "reshape to another size": lambda B: B.reshape(B.zeros((2, 3)), (4,)),
    # a device may raise at its next host read: read something
    "check_index_range high": lambda B: (B.check_index_range(B.from_numpy(np.array([0, 5])), 3, "embedding"),
                                         B.to_numpy(B.zeros(1))),
    "check_index_range negative": lambda B: (B.check_index_range(B.from_numpy(np.array([-1, 2])), 3, "gather"),
                                             B.to_numpy(B.zeros(1))),
    "matmul core mismatch": lambda B: B.matmul(B.zeros((2, 3)), B.zeros((2, 3))),
    "matmul of a 0-d array": lambda B: B.matmul(B.zeros(()), B.zeros((2,))),
    "concatenate mismatched": lambda B: B.concatenate([B.zeros((2, 3)), B.zeros((2, 4))], axis=0),
    "set_kernels unknown": lambda B: B.set_kernels("fast"),
    "transpose bad axes": lambda B: B.transpose(B.zeros((2, 3)), (0, 0)),
    "sum over a missing axis": lambda B: B.sum(B.zeros((2, 3)), axis=2),
}

DOCUMENTED = {  # messages the contract states word for word
    "check_index_range high": (IndexError, "embedding: index out of range: indices must be in [0, 3), got min 0, max 5"),
    "check_index_range negative": (IndexError, "gather: index out of range: indices must be in [0, 3), got min -1, max 2"),
    "set_kernels unknown": (ValueError, "set_kernels: expected 'numba' or 'reference', got 'fast'"),
}


def _error(fn, B):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn(B)
        except Exception as e:  # noqa: BLE001 - the exception is what is compared
            return type(e), str(e)
    return None


@pytest.mark.parametrize("what", list(ERROR_CASES))
def test_bad_input_raises_the_same_error_as_the_cpu_backend(backend, what):
    """The CPU backend is the reference for messages (NumPy's own where NumPy raises)."""
    got = _error(ERROR_CASES[what], backend)
    assert got is not None, f"{what}: no exception on {backend.name}"
    want = DOCUMENTED.get(what) or _error(ERROR_CASES[what], get_backend("cpu"))
    assert got[0] is want[0], f"{what}: {got[0].__name__} on {backend.name}, {want[0].__name__} on cpu"
    assert got[1] == want[1], f"{what}: message on {backend.name}: {got[1]!r}; on cpu: {want[1]!r}"


# ----------------------------------------------------------------------------- the rest
def test_errstate_silences_warnings(backend):
    B = backend
    z = B.zeros(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with B.errstate(divide="ignore", invalid="ignore"):
            r = B.to_numpy(B.log(z))
    assert_same(r, np.array([-np.inf, -np.inf]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask(backend, dtype):
    B, p = backend, 0.25
    m = B.dropout_mask((16, 16), p, 1234, dtype)
    assert isinstance(m, B.ndarray)
    h = B.to_numpy(m)
    assert h.shape == (16, 16) and h.dtype == dtype
    scale = dtype(1.0 / (1.0 - p))
    assert np.isin(h, [0.0, scale]).all(), np.unique(h)
    assert 0.1 < (h == 0).mean() < 0.4, (h == 0).mean()
    assert_same(B.to_numpy(B.dropout_mask((16, 16), p, 1234, dtype)), h, "same seed, same mask")
    assert not np.array_equal(B.to_numpy(B.dropout_mask((16, 16), p, 1235, dtype)), h), "another seed"


def test_set_kernels_round_trips(backend):
    prev = backend.get_kernels()
    try:
        for name in ("reference", "numba"):
            backend.set_kernels(name)
            assert backend.get_kernels() == name
    finally:
        backend.set_kernels(prev)
