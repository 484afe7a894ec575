"""Tensor creation, dtypes, conversion and the non-differentiable Tensor API."""
import numpy as np
import pytest

import minitrans as mt


# ----------------------------------------------------------------------------- dtypes
def test_dtype_objects():
    assert mt.float32.is_floating_point and mt.float64.is_floating_point
    assert not mt.int64.is_floating_point and not mt.bool.is_floating_point
    assert (mt.float32.itemsize, mt.float64.itemsize, mt.int64.itemsize, mt.bool.itemsize) == (4, 8, 8, 1)
    assert mt.float is mt.float32 and mt.double is mt.float64 and mt.long is mt.int64
    assert isinstance(mt.float32, mt.dtype)
    assert "float32" in repr(mt.float32)
    assert mt.zeros(1, dtype="float64").dtype is mt.float64
    assert mt.zeros(1, dtype=np.float64).dtype is mt.float64


# ----------------------------------------------------------------------------- creation
def test_tensor_default_dtypes():
    assert mt.tensor([1.0, 2.0]).dtype is mt.float32
    assert mt.tensor(1.5).dtype is mt.float32
    assert mt.tensor([1, 2]).dtype is mt.int64
    assert mt.tensor([True, False]).dtype is mt.bool
    assert mt.tensor(np.array([1.0])).dtype is mt.float64  # NumPy arrays keep their dtype
    assert mt.tensor(np.array([1], np.int32)).dtype is mt.int64
    assert mt.tensor(np.array([1.0], np.float16)).dtype is mt.float32
    assert mt.tensor([1, 2], dtype=mt.float64).dtype is mt.float64


def test_tensor_copies_its_data():
    a = np.array([1.0, 2.0])
    t = mt.tensor(a)
    a[0] = 5.0
    assert t.numpy()[0] == 1.0
    shared = mt.from_numpy(a)
    a[1] = 7.0
    assert shared.numpy()[1] == 7.0
    t2 = mt.tensor(t)
    assert t2.numpy() is not t.numpy() and np.array_equal(t2.numpy(), t.numpy())


def test_constant_creation():
    z = mt.zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype is mt.float32 and not z.numpy().any()
    assert mt.zeros((2, 3)).shape == (2, 3)
    o = mt.ones(4, dtype=mt.int64)
    assert o.dtype is mt.int64 and o.numpy().tolist() == [1, 1, 1, 1]
    f = mt.full((2, 2), 7.5)
    assert f.dtype is mt.float32 and (f.numpy() == 7.5).all()
    assert mt.full((2,), 3).dtype is mt.int64
    assert mt.full((2,), True).dtype is mt.bool
    assert mt.zeros(0, 3).shape == (0, 3)
    assert mt.empty(2).shape == (2,)
    r = mt.zeros(2, requires_grad=True)
    assert r.requires_grad and r.is_leaf


def test_arange_and_linspace():
    a = mt.arange(5)
    assert a.dtype is mt.int64 and a.numpy().tolist() == [0, 1, 2, 3, 4]
    assert mt.arange(2, 8, 3).numpy().tolist() == [2, 5]
    b = mt.arange(0.0, 1.0, 0.25)
    assert b.dtype is mt.float32
    np.testing.assert_allclose(b.numpy(), [0.0, 0.25, 0.5, 0.75])
    assert mt.arange(3, dtype=mt.float64).dtype is mt.float64
    np.testing.assert_allclose(mt.linspace(0, 1, 5).numpy(), [0, 0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError):
        mt.arange(0, 3, 0)


def test_like_functions():
    x = mt.ones(2, 3, dtype=mt.float64)
    for f, fill in [(mt.zeros_like, 0), (mt.ones_like, 1)]:
        y = f(x)
        assert y.shape == (2, 3) and y.dtype is mt.float64 and (y.numpy() == fill).all()
    y = mt.full_like(x, 4.0)
    assert y.dtype is mt.float64 and (y.numpy() == 4.0).all()
    assert mt.empty_like(x).shape == (2, 3)
    assert mt.zeros_like(x, dtype=mt.int64).dtype is mt.int64
    assert mt.randn_like(x).shape == (2, 3) and mt.randn_like(x).dtype is mt.float64
    r = mt.rand_like(x)
    assert r.shape == (2, 3) and ((r.numpy() >= 0) & (r.numpy() < 1)).all()
    ri = mt.randint_like(mt.zeros(3, 4, dtype=mt.int64), 0, 5)
    assert ri.shape == (3, 4) and ri.dtype is mt.int64 and ((ri.numpy() >= 0) & (ri.numpy() < 5)).all()


def test_random_creation_and_seed_reproducibility():
    mt.manual_seed(123)
    a, b, c = mt.randn(3, 4), mt.rand(5), mt.randint(0, 10, (6,))
    mt.manual_seed(123)
    a2, b2, c2 = mt.randn(3, 4), mt.rand(5), mt.randint(0, 10, (6,))
    np.testing.assert_array_equal(a.numpy(), a2.numpy())
    np.testing.assert_array_equal(b.numpy(), b2.numpy())
    np.testing.assert_array_equal(c.numpy(), c2.numpy())
    assert a.dtype is mt.float32 and b.dtype is mt.float32 and c.dtype is mt.int64
    assert ((b.numpy() >= 0) & (b.numpy() < 1)).all()
    assert ((c.numpy() >= 0) & (c.numpy() < 10)).all()
    mt.manual_seed(124)
    assert not np.array_equal(mt.randn(3, 4).numpy(), a.numpy())
    big = mt.randn(20000, dtype=mt.float64).numpy()
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05
    state = mt.get_rng_state()
    x = mt.randn(4)
    mt.set_rng_state(state)
    np.testing.assert_array_equal(mt.randn(4).numpy(), x.numpy())
    assert mt.randn(2, requires_grad=True).requires_grad
    assert sorted(mt.randperm(5).numpy().tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError):
        mt.randn(2, dtype=mt.int64)


# ----------------------------------------------------------------------------- attributes and conversion
def test_shape_ndim_numel_size():
    t = mt.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.ndim == 3 and t.dim() == 3 and t.numel() == 24
    assert t.size() == (2, 3, 4) and t.size(1) == 3 and len(t) == 2
    s = mt.tensor(3.0)
    assert s.shape == () and s.ndim == 0 and s.numel() == 1
    with pytest.raises(TypeError):
        len(s)
    assert mt.zeros(0, 5).numel() == 0


def test_numpy_item_tolist():
    t = mt.tensor([[1.0, 2.0], [3.0, 4.0]])
    arr = t.numpy()
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert mt.tensor([2.5]).item() == 2.5 and isinstance(mt.tensor([2.5]).item(), float)
    assert mt.tensor(7).item() == 7 and isinstance(mt.tensor(7).item(), int)
    assert float(mt.tensor(1.5)) == 1.5 and int(mt.tensor(3)) == 3
    assert bool(mt.tensor(True)) is True
    with pytest.raises(RuntimeError):
        bool(mt.tensor([1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(t), arr)


def test_detach_and_requires_grad():
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    assert x.is_leaf and x.grad_fn is None
    y = x * 2
    assert y.requires_grad and not y.is_leaf and y.grad_fn is not None
    d = y.detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    np.testing.assert_array_equal(d.numpy(), y.numpy())
    z = mt.tensor([1.0])
    assert z.requires_grad_() is z and z.requires_grad
    z.requires_grad_(False)
    assert not z.requires_grad
    with pytest.raises(RuntimeError):
        y.requires_grad_(False)
    x2 = x.data
    assert not x2.requires_grad and np.array_equal(x2.numpy(), x.numpy())


def test_astype_and_to():
    x = mt.tensor([1.7, -2.2])
    assert x.astype(mt.float64).dtype is mt.float64
    i = x.astype(mt.int64)
    assert i.dtype is mt.int64 and i.numpy().tolist() == [1, -2]
    assert x.to(mt.float64).dtype is mt.float64
    assert x.to(dtype=mt.float64).dtype is mt.float64
    assert x.to("cpu") is x and x.to(mt.float32) is x
    assert x.double().dtype is mt.float64 and x.long().dtype is mt.int64 and x.bool().dtype is mt.bool
    assert x.double().float().dtype is mt.float32
    assert x.device == mt.device("cpu") and str(x.device) == "cpu"
    # a cast of a tensor that requires grad stays in the graph, and the gradient comes back in its dtype
    w = mt.tensor([1.0, 2.0], requires_grad=True)
    (w.to(mt.float64) * 3.0).sum().backward()
    assert w.grad.dtype is mt.float32 and w.grad.numpy().tolist() == [3.0, 3.0]


def test_repr_is_readable():
    assert repr(mt.tensor([1.0, 2.5])) == "tensor([1. , 2.5])"
    assert repr(mt.tensor([1, 2])) == "tensor([1, 2])"
    assert "dtype=minitrans.float64" in repr(mt.tensor([1.0], dtype=mt.float64))
    assert "requires_grad=True" in repr(mt.tensor([1.0], requires_grad=True))
    assert "grad_fn=<MulBackward>" in repr(mt.tensor([1.0], requires_grad=True) * 2)
    big = repr(mt.zeros(1000))
    assert "..." in big and len(big) < 200


def test_tensor_constructor_and_helpers():
    t = mt.Tensor([1.0, 2.0], requires_grad=True)
    assert isinstance(t, mt.Tensor) and t.requires_grad and t.dtype is mt.float32
    assert mt.is_tensor(t) and not mt.is_tensor([1.0])
    assert mt.as_tensor(t) is t
    assert mt.allclose(mt.tensor([1.0]), mt.tensor([1.0 + 1e-9]))
    assert mt.tensor([[1.0, 2.0]]).T.shape == (2, 1)


# ----------------------------------------------------------------------------- the class itself
def _class_body_names(cls) -> set:
    """The names bound inside ``class cls:`` in its module's source (defs and assignments)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(inspect.getmodule(cls)))
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__).body
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        names.add(t.id)
    return names


def test_every_tensor_method_is_defined_in_a_class_body():
    """IDEs, type checkers and help() see a method only when a class body defines it: nothing may be
    attached to Tensor from outside (as a module doing ``Tensor.sum = ...`` would)."""
    own = {cls: _class_body_names(cls) for cls in mt.Tensor.__mro__ if cls is not object}
    for name in set(dir(mt.Tensor)) - set(dir(object)) - {"__dict__", "__module__", "__weakref__", "__slots__"}:
        owner = next(cls for cls in mt.Tensor.__mro__ if name in vars(cls))
        assert owner is object or name in own[owner] or name in owner.__slots__, \
            f"Tensor.{name} is attached to {owner.__name__} from outside its class body"
    for name in ("sum", "reshape", "clamp_", "topk", "multinomial", "backward", "__add__", "__setitem__"):
        assert name in pydoc_text(), name


def pydoc_text() -> str:
    import pydoc

    return pydoc.render_doc(mt.Tensor, renderer=pydoc.plaintext)


def test_a_second_tensor_class_is_refused_and_parameter_stays_a_tensor():
    from minitrans._tensor_core import TensorBase

    with pytest.raises(TypeError, match="one tensor class"):
        type("OtherTensor", (TensorBase,), {"__slots__": ()})
    p = mt.nn.Parameter(mt.ones(2))
    assert isinstance(p * 2, mt.Tensor) and type(p * 2) is mt.Tensor


def test_tensor_hash_is_identity_and_eq_is_elementwise():
    a, b = mt.tensor([1.0, 2.0]), mt.tensor([1.0, 2.0])
    assert hash(a) == id(a) and len({a, b}) == 2
    assert (a == b).tolist() == [True, True]


# ----------------------------------------------------------------------------- dims
def test_normalize_dim_is_the_one_dim_rule():
    from minitrans._dims import normalize_dim

    assert normalize_dim(-1, 3, "f") == 2 and normalize_dim(np.int64(1), 3, "f") == 1
    assert normalize_dim(0, 0, "f") == 0 and normalize_dim(-1, 0, "f") == 0      # a 0-d tensor has dim 0 / -1
    with pytest.raises(IndexError, match=r"^f: dim 3 is out of range for a tensor with 3 dimensions$"):
        normalize_dim(3, 3, "f")
    with pytest.raises(IndexError, match="dim -4 is out of range"):
        normalize_dim(-4, 3, "f")
    with pytest.raises(TypeError, match="f: dim must be an int, got float"):
        normalize_dim(1.0, 3, "f")


@pytest.mark.parametrize("call", [lambda x: x.transpose(0, 5), lambda x: x.sum(5), lambda x: x.softmax(5),
                                  lambda x: x.cumsum(5), lambda x: mt.cat([x, x], 5), lambda x: x.max(5),
                                  lambda x: x.argmax(5), lambda x: x.unsqueeze(6), lambda x: x.flatten(5)])
def test_every_dim_argument_gives_the_same_error(call):
    with pytest.raises(IndexError, match="dim 5 is out of range for a tensor with 2 dimensions|"
                                         "dim 6 is out of range for a tensor with 3 dimensions"):
        call(mt.ones(2, 3))


# ----------------------------------------------------------------------------- in place
def test_clamp_in_place_writes_into_the_tensor_and_bumps_its_version():
    x = mt.tensor([-2.0, 0.5, 3.0])
    data, version = x._data, x._version
    assert x.clamp_(-1.0, 1.0) is x and x.tolist() == [-1.0, 0.5, 1.0]
    assert x._data is data and x._version == version + 1
    assert mt.tensor([5, -5]).clamp_(max=2).tolist() == [2, -5]


def test_assigning_a_graph_value_into_a_view_of_a_plain_tensor_is_refused():
    """The view's base would hold values whose history it does not know (a gradient lost)."""
    base = mt.zeros(4)
    view = base[1:3]
    w = mt.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="assigning into a view"):
        view[:] = w * 2
    copy = base[[1, 2]]                                   # advanced indexing copies: no view, allowed
    copy[:] = w * 2
    copy.sum().backward()
    assert w.grad.tolist() == [2.0, 2.0]
    detached_view = base.detach()[1:3]
    with pytest.raises(RuntimeError, match="assigning into a view"):
        detached_view.detach()[0] = w[0]


def test_dims_and_sizes_given_as_numpy_integers_or_negative_ints_act_as_plain_ints():
    """Plain ints take a fast path in the dim and size checks; every other integer type must still work."""
    x = mt.tensor(np.arange(24.0).reshape(2, 3, 4))
    ref = np.arange(24.0).reshape(2, 3, 4)
    assert x.permute(np.int64(2), -3, np.int32(1)).shape == (4, 2, 3)
    np.testing.assert_array_equal(x.permute(-1, 0, 1).numpy(), ref.transpose(2, 0, 1))
    np.testing.assert_array_equal(x.transpose(np.int64(0), -1).numpy(), ref.transpose(2, 1, 0))
    np.testing.assert_array_equal(x.sum(np.int64(-1)).numpy(), ref.sum(-1))
    y = x.reshape(np.int64(6), 4)
    assert y.shape == (6, 4) and all(type(s) is int for s in y.shape)
    with pytest.raises(TypeError, match="shape entries must be ints"):
        x.reshape(6.0, 4)
    with pytest.raises(TypeError, match="dim must be an int"):
        x.sum(1.0)
    for bad in [(0, 1), (0, 1, 1), (0, 1, 3), (0, 1, -4), (0, 1, 2, 0)]:
        with pytest.raises(ValueError, match="not a permutation"):
            x.permute(*bad)
