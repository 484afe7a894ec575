"""The ``mt`` namespace exports what ``__all__`` lists and no helpers; dtype mixing errors as in PyTorch."""
import types

import numpy as np
import pytest

import minitrans as mt
from minitrans import nn


def test_namespace_has_no_leaked_helpers():
    for name in ("E", "M", "S", "annotations", "np", "numbers"):
        assert not hasattr(mt, name), name
    for name in vars(mt):
        if not name.startswith("_"):
            assert name in mt.__all__ or isinstance(getattr(mt, name), types.ModuleType), name


def test_every_exported_name_resolves():
    for name in mt.__all__:
        assert getattr(mt, name) is not None, name
    ns = {}
    exec("from minitrans import *", ns)
    assert {"tensor", "tril", "multinomial", "no_grad", "save"} <= set(ns) and "E" not in ns
    assert "nn" not in ns                   # as torch: subpackages are imported by name


def _mixed_cases(lib):
    lin = lib.nn.Linear(3, 2)
    x64 = lib.ones(4, 3, dtype=lib.float64)
    ln = lib.nn.LayerNorm(3)
    return {"linear": lambda: lin(x64), "matmul": lambda: lib.ones(2, 3) @ lib.ones(3, 2, dtype=lib.float64),
            "layer_norm": lambda: ln(x64)}


@pytest.mark.parametrize("case", ["linear", "matmul", "layer_norm"])
def test_float64_input_to_float32_weights_is_refused(case):
    with pytest.raises(RuntimeError, match="dtype"):
        _mixed_cases(mt)[case]()
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError):                     # PyTorch's error type is the same
        _mixed_cases(torch)[case]()


def test_converting_the_model_or_input_works():
    lin = nn.Linear(3, 2)
    x = mt.ones(4, 3, dtype=mt.float64)
    assert lin(x.float()).dtype is mt.float32
    assert lin.double()(x).dtype is mt.float64
    np.testing.assert_allclose(lin(x).numpy(), x.numpy() @ lin.weight.numpy().T + lin.bias.numpy())


def test_top_level_functions_are_the_tensor_methods_of_their_name():
    from minitrans import _functions

    for name in _functions._METHOD_FUNCTIONS:
        fn = getattr(mt, name)
        assert fn.__name__ == name and name in dir(mt.Tensor), name
    x = mt.tensor([[3.0, -1.0], [0.5, 2.0]])
    np.testing.assert_array_equal(mt.clamp(x, 0.0, 1.0).numpy(), np.clip(x.numpy(), 0.0, 1.0))
    np.testing.assert_array_equal(mt.tril(x).numpy(), np.tril(x.numpy()))
    assert mt.div(mt.tensor([7, -7]), 2, rounding_mode="floor").tolist() == [3, -4]
    with pytest.raises(TypeError, match="sum: expected a Tensor, got list"):
        mt.sum([1.0, 2.0])
