"""python -m minitrans.gradcheck_report: coverage of every op and layer, the library passes, a planted bug is named."""
from __future__ import annotations

import gc
import importlib.util
import pathlib
import sys
import textwrap

import pytest

import minitrans as mt
from minitrans import gradcheck_report as report
from minitrans.autograd import Function


def test_every_op_and_layer_has_a_case_or_a_reason():
    assert report.missing() == []


def test_a_new_op_without_a_case_is_reported_missing():
    class Planted(Function):
        @staticmethod
        def forward(ctx, a):
            return a

        @staticmethod
        def backward(ctx, g):
            return g

    Planted.__module__ = "minitrans.ops.planted"
    try:
        assert "minitrans.ops.planted." + Planted.__qualname__ in report.missing()
        assert report.main(["--only", "Neg", "--fast"]) == 1        # and the run fails because of it
    finally:
        del Planted
        gc.collect()
    assert report.missing() == []


def test_whole_library_passes_in_fast_mode_on_cpu(capsys):
    assert report.main(["--fast"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "ERROR" not in out
    for name in ("Matmul", "ScaledDotProductAttention", "nn.TransformerDecoderLayer", "nn.MultiheadAttention"):
        assert f"\n{name} " in out


def test_full_jacobians_with_broadcast_and_non_contiguous_layouts(capsys):
    assert report.main(["--only", "Matmul", "--only", "LayerNorm(op)"]) == 0
    out = capsys.readouterr().out
    assert "2x3x4, 4x5" in out and "(nc)" in out and "of 9 checks pass" in out


def test_a_case_that_never_reaches_its_op_fails(monkeypatch, capsys):
    cases = report.cases()
    neg = next(c for c in cases if c.name == "Neg")
    neg.call = lambda a: a * -1.0                       # right gradient, but Neg is never called
    monkeypatch.setattr(report, "cases", lambda: [neg])
    assert report.main(["--fast"]) == 1
    assert "never calls Neg" in capsys.readouterr().out


PLANTED = '''
import numpy as np
import minitrans as mt
from minitrans.autograd import Function


class BadSquare(Function):
    """x², with a backward that is wrong at one element."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_arrays
        grad = 2 * x * g
        grad[1, 2] += 0.5 * g[1, 2]
        return grad


class Planted(mt.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = mt.nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(BadSquare.apply(x.tanh()).exp())


class Fine(mt.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = mt.nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x.tanh() * x)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_layers.py").write_text(textwrap.dedent(PLANTED))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_layers"
    sys.modules.pop("user_layers", None)


def test_planted_wrong_backward_fails_and_names_op_and_element(user_module, capsys):
    assert report.main(["--target", f"{user_module}:Planted", "--shape", "3,4"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    # the module-level failure names the input element, in the layout the layer saw (also for the transposed copy)
    assert out.count("d/d input 0 (3, 4), element (1, 2)") == 2
    # and each op is rerun on its own: the wrong one is named, with the element of its own input
    assert "op BadSquare" in out and "input 0 (3, 4), element (1, 2)" in out
    assert "op Tanh" not in out and "op Linear" not in out


def test_a_correct_user_module_passes(user_module, capsys):
    assert report.main(["--target", f"{user_module}:Fine", "--shape", "3,4"]) == 0
    assert "2 of 2 checks pass" in capsys.readouterr().out


def test_bad_command_lines_exit_with_a_message(user_module):
    with pytest.raises(SystemExit, match="module:attr"):
        report.main(["--target", "no_colon"])
    with pytest.raises(SystemExit, match="has no attribute"):
        report.main(["--target", f"{user_module}:Nope", "--shape", "3"])
    with pytest.raises(SystemExit, match="--shape"):
        report.main(["--target", f"{user_module}:Fine"])


# ----------------------------------------------------------------------------- cuda (simulator in CI)
def _cuda_small_tiles():
    """The CUDA tests' tile shrinking (tests/cuda/conftest.py), reused so the simulator stays fast."""
    path = pathlib.Path(__file__).parents[1] / "cuda" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_gradexp_cuda_tiles", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.small_tiles


small_tiles = _cuda_small_tiles()


def test_report_on_cuda(capsys):
    assert mt.cuda.is_available()              # real GPU, or NUMBA_ENABLE_CUDASIM=1 as set by tests/conftest.py
    assert report.main(["--device", "cuda", "--fast", "--only", "LogSoftmax", "--only", "ToDevice",
                        "--only", "nn.Linear"]) == 0
    out = capsys.readouterr().out
    assert "ToDevice " in out and " cuda " in out and "n/a" not in out
