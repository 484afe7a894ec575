"""Integer tensors as Python indices, and item assignment (``x[k] = v``) with PyTorch's in-place semantics."""
import numpy as np
import pytest

import minitrans as mt

from helpers import rand


def test_index_from_int_tensor():
    data = mt.arange(20)
    i = mt.tensor(7)
    np.testing.assert_array_equal(data[i:i + 3].numpy(), [7, 8, 9])
    assert ["a", "b", "c"][mt.tensor(2)] == "c"
    assert list(range(mt.tensor(3))) == [0, 1, 2]
    assert [0, 1][mt.tensor([1])] == 1                  # a single element of any rank, as in PyTorch
    j = mt.randint(0, 10, (1,))[0]                      # the shape data[i:i+n] takes in a training loop
    np.testing.assert_array_equal(data[j:j + 2].numpy(), [int(j), int(j) + 1])


@pytest.mark.parametrize("bad", [mt.tensor(1.0), mt.tensor([1, 2])])
def test_index_refuses_float_and_multi_element(bad):
    with pytest.raises(TypeError, match="only integer tensors of a single element"):
        [0, 1, 2][bad]


CASES = [  # (shape, index, value shape or None for a number)
    ((5,), 2, None),
    ((5,), -1, None),
    ((6, 4), (slice(None), slice(0, None, 2)), (6, 2)),   # pe[:, 0::2] = ...
    ((6, 4), (slice(None), slice(1, None, 2)), (2,)),     # broadcast along rows
    ((3, 4, 5), (Ellipsis, 1), (3, 4)),
    ((3, 4), (1,), (1, 4)),
    ((4, 3), "mask", None),
    ((5, 2), "ints", (3, 2)),
    ((1,), 0, None),
]


def _np_index(idx, shape, rng):
    if idx == "mask":
        return rng.random(shape) > 0.5
    if idx == "ints":
        return np.array([4, 0, 2])
    return idx


def _mt_index(idx):
    return mt.tensor(idx) if isinstance(idx, np.ndarray) else idx


@pytest.mark.parametrize("shape,idx,vshape", CASES)
def test_setitem_matches_numpy_and_bumps_version(shape, idx, vshape):
    rng = np.random.default_rng(0)
    ref = rand(rng, shape).astype(np.float32)
    idx = _np_index(idx, shape, rng)
    value = 3.5 if vshape is None else rand(rng, vshape).astype(np.float32)
    x = mt.tensor(ref)
    v0 = x._version
    x[_mt_index(idx)] = value if vshape is None else mt.tensor(value)
    ref[idx] = value
    np.testing.assert_array_equal(x.numpy(), ref)
    assert x._version == v0 + 1


def test_setitem_writes_through_a_noncontiguous_view():
    base = mt.zeros(3, 4)
    view = base.t()                     # (4, 3), shares storage
    view[1] = mt.tensor([1.0, 2.0, 3.0])
    want = np.zeros((3, 4), np.float32)
    want[:, 1] = [1, 2, 3]
    np.testing.assert_array_equal(base.numpy(), want)
    assert base._version == view._version == 1


def test_setitem_casts_to_the_tensors_dtype():
    x = mt.zeros(3, dtype=mt.int64)
    x[1] = 2.7                          # truncated, as in PyTorch
    y = mt.zeros(2)
    y[0] = mt.tensor(1.5, dtype=mt.float64)
    assert x.dtype is mt.int64 and x.tolist() == [0, 2, 0]
    assert y.dtype is mt.float32 and y.tolist() == [1.5, 0.0]


def _assign(x, v, idx):
    y = x * 1.0                         # a non-leaf, so that assignment into it is recorded
    y[idx] = v
    return y * y


@pytest.mark.parametrize("idx", [(slice(None), slice(0, None, 2)), (1,), "mask"])
def test_setitem_gradcheck(idx):
    rng = np.random.default_rng(1)
    if idx == "mask":
        m = rng.random((4, 5)) > 0.5
        idx, vshape = mt.tensor(m), (int(m.sum()),)
    else:
        vshape = np.zeros((4, 5))[idx].shape
    x = mt.tensor(rand(rng, (4, 5)), requires_grad=True)
    v = mt.tensor(rand(rng, vshape), requires_grad=True)
    assert mt.autograd.gradcheck(lambda a, b: _assign(a, b, idx), (x, v))


def test_setitem_gradients_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    xs, vs, w = rand(rng, (4, 6)), rand(rng, (4, 1)), rand(rng, (4, 6))
    outs = []
    for lib in (torch, mt):
        x = lib.tensor(xs, requires_grad=True)
        v = lib.tensor(vs, requires_grad=True)
        y = x * 2.0 + 1.0
        y[:, 1::2] = v                  # broadcast: v's gradient sums over 3 columns
        (y * lib.tensor(w)).sum().backward()
        outs.append([np.asarray(t.detach().numpy()) for t in (y, x.grad, v.grad)])
    for a, b in zip(*outs):
        np.testing.assert_allclose(b, a, rtol=1e-12)


def test_setitem_refuses_a_leaf_that_requires_grad():
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError):
        torch.zeros(3, requires_grad=True)[0] = 1.0
    w = mt.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w[0] = 1.0
    with mt.no_grad():                  # allowed outside the graph, as in PyTorch
        w[0] = 1.0
    assert w.tolist() == [1.0, 0.0, 0.0] and w._version == 1


def test_setitem_invalidates_saved_values():
    x = mt.randn(3, requires_grad=True)
    y = x.exp()                         # exp saves its output for backward
    y[0] = 0.0
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.sum().backward()


def test_setitem_into_a_view_while_recording_is_refused():
    x = mt.randn(3, 4, requires_grad=True)
    view = (x * 2)[0]
    with pytest.raises(RuntimeError, match="view"):
        view[1] = mt.tensor(1.0, requires_grad=True)


def test_setitem_bad_input_errors():
    x = mt.zeros(3, 4)
    with pytest.raises(IndexError, match=r"shape \(3, 4\)"):
        x[5] = 1.0
    with pytest.raises(RuntimeError, match=r"value of shape \(3,\)"):
        x[0] = mt.ones(3)
    with pytest.raises(IndexError, match="int64 or bool"):
        x[mt.tensor(1.0)] = 1.0
    with pytest.raises(TypeError, match="cannot assign a str"):
        x[0] = "a"
    assert x._version == 0 and not x.numpy().any()      # nothing was written


def test_clone_copies_and_passes_gradient():
    x = mt.tensor(rand(np.random.default_rng(3), (2, 3)), requires_grad=True)
    c = x.clone()
    assert c._data is not x._data and np.shares_memory(c._data, x._data) is False
    assert mt.autograd.gradcheck(lambda a: a.clone() * a, (x,))
