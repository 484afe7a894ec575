"""``experiments/gpu_check.py`` cannot run without a GPU; its argument parsing, the plan it
would run (``--dry-run`` touches no device), the wheel download it would run and the offline
install it makes on the GPU machine (for real, from a wheel built here) are checked here."""
import importlib.util
import json
import subprocess
import sys
import tomllib
import zipfile
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


@pytest.mark.parametrize("argv", [["--skip", "nonsense"], ["--reps", "0"], ["--train-time", "-1"], ["--full"]])
def test_bad_arguments_are_rejected_with_a_message(gpu_check, argv, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(argv)
    assert e.value.code == 2
    assert "gpu_check.py: error:" in capsys.readouterr().err


def test_prepare_wheels_downloads_binary_cp312_wheels_and_records_what_to_install(gpu_check, tmp_path):
    cmd = gpu_check.prepare_command(tmp_path, full=False)
    assert cmd[1:4] == ["-m", "pip", "download"]
    for flag in (["--python-version", "3.12"], ["--only-binary=:all:"], ["-d", str(tmp_path)],
                 ["--platform", "manylinux_2_28_x86_64"]):
        assert any(cmd[i:i + len(flag)] == flag for i in range(len(cmd))), flag
    assert "numpy>=1.24,<2.5" in cmd and "pytest>=7" in cmd and not any("numba" in c for c in cmd)
    full = gpu_check.prepare_command(tmp_path, full=True)
    assert "numba-cuda[cu12]>=0.30.4,<0.31" in full and "numba>=0.60,<0.69" in full

    seen = []
    ok = gpu_check.prepare_wheels(tmp_path / "w", True, run=lambda c: seen.append(c) or subprocess.CompletedProcess(c, 0))
    assert ok == 0 and seen == [gpu_check.prepare_command(tmp_path / "w", True)]
    assert (tmp_path / "w" / "requirements.txt").read_text().split() == list(gpu_check.FULL_SET)
    bad = gpu_check.prepare_wheels(tmp_path / "x", False, run=lambda c: subprocess.CompletedProcess(c, 1))
    assert bad == 1 and not (tmp_path / "x" / "requirements.txt").exists()


def test_full_wheel_set_uses_the_pins_of_pyproject(gpu_check):
    project = tomllib.loads((PATH.parents[1] / "pyproject.toml").read_text())["project"]
    cuda_extra = project["optional-dependencies"]["cuda"]
    numba = next(d for d in project["dependencies"] if d.startswith("numba"))
    assert numba in gpu_check.FULL_SET
    assert next(d for d in cuda_extra if d.startswith("numba-cuda")) in gpu_check.FULL_SET
    assert any(d.startswith("numpy") and "<2.5" in d for d in gpu_check.FULL_SET)


def test_dry_run_shows_the_offline_install_when_wheels_are_prepared(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--wheels", str(tmp_path)]) == 0
    assert "install" not in json.loads(capsys.readouterr().out)  # nothing prepared: nothing to install
    (tmp_path / "requirements.txt").write_text("numpy<2.5\n")
    assert gpu_check.main(["--dry-run", "--wheels", str(tmp_path)]) == 0
    venv, reqs, checkout = json.loads(capsys.readouterr().out)["install"]
    assert "-m venv --without-pip" in venv and str(tmp_path / "venv") in venv
    for cmd in (reqs, checkout):
        assert f"--no-index --find-links {tmp_path}" in cmd and cmd.startswith(str(tmp_path / "venv" / "bin" / "python"))
    assert f"-r {tmp_path / 'requirements.txt'}" in reqs and "--ignore-installed" in reqs
    assert checkout.endswith(f"--no-deps -e {PATH.parents[1]}")


def _wheel(folder: Path, name: str) -> None:
    """A minimal pure-Python wheel of package ``name`` (module ``name`` with ``WHERE = __file__``)."""
    dist = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}/__init__.py", "WHERE = __file__\n")
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")


def test_offline_install_puts_the_wheels_in_a_venv_that_still_sees_this_environment(gpu_check, tmp_path):
    """The install commands, run for real without an index: the wheel lands in the venv and the
    venv's Python still imports this environment's packages (here pytest; PyTorch on a GPU machine)."""
    _wheel(tmp_path, "gpucheck_probe")
    (tmp_path / "requirements.txt").write_text("gpucheck_probe\n")
    venv_cmd, reqs_cmd, _ = gpu_check.install_commands(tmp_path)
    subprocess.run(venv_cmd, check=True)
    gpu_check.link_outer_packages(tmp_path)
    subprocess.run(reqs_cmd, check=True, capture_output=True)
    py = str(gpu_check.venv_python(tmp_path))
    out = subprocess.run([py, "-c", "import gpucheck_probe, pytest; print(gpucheck_probe.WHERE); print(pytest.__file__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(tmp_path / "venv")), out
    assert Path(out[1]).resolve() == Path(pytest.__file__).resolve(), out
