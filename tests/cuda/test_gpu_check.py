"""``experiments/gpu_check.py`` cannot run without a GPU; its argument parsing and the plan it
would run are checked here (``--dry-run`` touches no device)."""
import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "experiments" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_prints_the_whole_plan(gpu_check, capsys):
    assert gpu_check.main(["--dry-run"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["steps"] == ["tests", "train", "bench"]
    assert "NUMBA_ENABLE_CUDASIM=0" in p["tests"]["command"] and "tests/cuda tests/kernels" in p["tests"]["command"]
    assert "--device cuda" in p["train"]["command"] and "--target 0.99" in p["train"]["command"]
    assert set(p["bench"]) >= {"W1", "W2", "W3", "W4"}
    assert 4096 in p["bench"]["W3"]["n"] and "TF32 off" in p["bench"]["W3"]["peer"]
    assert "copy" in p["bench"]["W4"]["peer"] and "SDPA" in p["bench"]["W2"]["peer"]


def test_skip_and_options_shape_the_plan(gpu_check, capsys):
    assert gpu_check.main(["--dry-run", "--skip", "train,bench", "--train-time", "60"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["steps"] == ["tests"] and "train" not in p and "bench" not in p
    a = gpu_check.parse_args(["--skip", "tests", "--train-time", "60", "--reps", "3", "--no-results-md"])
    assert a.steps == ["train", "bench"] and a.reps == 3 and a.no_results_md
    assert "--time-limit 60" in gpu_check.plan(a)["train"]["command"]


@pytest.mark.parametrize("argv", [["--skip", "nonsense"], ["--reps", "0"], ["--train-time", "-1"]])
def test_bad_arguments_are_rejected_with_a_message(gpu_check, argv, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(argv)
    assert e.value.code == 2
    assert "gpu_check.py: error:" in capsys.readouterr().err
