"""The experiment scripts: the worked self-attention example checked figure by figure against NumPy,
and fast smoke runs of the reversal and addition training scripts (incl. --resume)."""
import csv
import json
import os
import re
import sys

import numpy as np
import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
sys.path.insert(0, EXPERIMENTS)

import self_attention_v0  # noqa: E402

# The word vectors, written out again here (not taken from the script).
WORDS = ["cat", "chase", "mouse"]
X = np.array([[1.0, 0.0, 0.5, 0.2],
              [0.0, 1.0, 0.0, 0.3],
              [0.5, 0.0, 1.0, 0.1]])


def _expected():
    scores = X @ X.T                                          # Q = K = V = X
    z = scores / 2.0                                          # / √d with d = 4
    e = np.exp(z - z.max(axis=1, keepdims=True))
    weights = e / e.sum(axis=1, keepdims=True)
    return scores, weights, weights @ X


def _printed_table(text: str, title_start: str, n_rows: int):
    """The numbers of the table whose title line starts with ``title_start``: {row label: [floats]}."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(title_start))
    rows = {}
    for line in lines[i + 2:i + 2 + n_rows]:
        label, *nums = line.split()
        for s in nums:
            assert re.fullmatch(r"-?\d+\.\d{4}", s), f"{s!r} is not a 4-decimal figure"
        rows[label] = nums
    return rows


def test_self_attention_example_figures(tmp_path, capsys):
    scores, weights, output = _expected()
    assert scores[1, 0] == pytest.approx(0.06, abs=1e-15) and scores[0, 1] == pytest.approx(0.06, abs=1e-15)

    out_json = tmp_path / "figures.json"
    r = self_attention_v0.main(["--json", str(out_json)])
    printed = capsys.readouterr().out
    with open(out_json) as f:
        on_disk = json.load(f)
    for res in (r, on_disk):
        assert res["words"] == WORDS
        assert res["scale"] == pytest.approx(0.5, rel=1e-15)
        # 1e-6: see test_self_attention_full_float64_precision for why not 1e-12 yet
        np.testing.assert_allclose(res["scores"], scores, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(res["weights"], weights, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(res["output"], output, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.sum(res["weights"], axis=1), 1.0, rtol=1e-12)
    assert round(r["scores"][1][0], 4) == 0.06          # chase → cat raw score

    # the printed figures are the 4-decimal roundings of the independent NumPy values
    for title, ref, cols in (("raw scores", scores, WORDS), ("attention weights", weights, WORDS),
                             ("output P·V", output, [f"dim{i}" for i in range(4)])):
        assert title in printed
        table = _printed_table(printed, title, 3)
        assert list(table) == WORDS
        for w, row in zip(WORDS, ref):
            assert table[w] == [f"{v:.4f}" for v in row], f"{title}, row {w}"
    assert _printed_table(printed, "raw scores", 3)["chase"][0] == "0.0600"
    assert "softmax(scores × 0.50)" in printed


def test_self_attention_full_float64_precision():
    scores, weights, output = _expected()
    r = self_attention_v0.compute()
    np.testing.assert_allclose(r["scores"], scores, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r["output"], output, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r["weights"], weights, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- training scripts, tiny settings
TINY = ["--batch-size", "16", "--eval-every", "30", "--eval-size", "20", "--d-model", "16", "--heads", "2",
        "--layers", "1", "--ff", "32", "--quiet"]


def _check_run_dir(d, steps):
    for name in ("metrics.csv", "summary.json", "checkpoint.npz"):
        assert os.path.exists(os.path.join(d, name)), name
    with open(os.path.join(d, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(d, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert summary["steps"] == steps and int(rows[-1]["step"]) == steps
    assert np.isfinite(float(rows[-1]["train_loss"]))
    assert 0.0 <= float(rows[-1]["seq_acc"]) <= 1.0
    return summary, rows


def test_reverse_smoke_and_resume(tmp_path, capsys):
    import minitrans as mt
    import reverse

    out = str(tmp_path / "rev")
    info = reverse.main(["--steps", "30", "--max-len", "6", "--out-dir", out] + TINY)
    assert isinstance(info, dict) and info["task"] == "reverse" and info["steps"] == 30
    summary, rows = _check_run_dir(out, 30)
    assert summary["held_out_exact_match"] == info["held_out_exact_match"]
    assert [int(r["step"]) for r in rows] == [10, 20, 30]             # one row per --log-every (10) steps
    assert [int(r["step"]) for r in rows if r["seq_acc"]] == [30]     # held-out metrics only at evaluations
    ck = mt.load(os.path.join(out, "checkpoint.npz"))
    assert ck["step"] == 30 and "encoder.layers.0.self_attn.in_proj_weight" in {
        k.removeprefix("transformer.") for k in ck["model"]}

    info2 = reverse.main(["--steps", "40", "--max-len", "6", "--out-dir", out, "--resume"] + TINY)
    assert "resuming " in capsys.readouterr().out
    assert info2["steps"] == 40
    _, rows = _check_run_dir(out, 40)
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]          # metrics carried over from the checkpoint
    assert [int(r["step"]) for r in rows if r["seq_acc"]] == [30, 40]
    assert mt.load(os.path.join(out, "checkpoint.npz"))["step"] == 40


def test_addition_smoke(tmp_path):
    import addition

    out = str(tmp_path / "add")
    info = addition.main(["--digits", "1", "--steps", "30", "--out-dir", out] + TINY)
    assert isinstance(info, dict) and info["task"] == "addition" and info["steps"] == 30
    assert re.fullmatch(r"\d\+\d=.*", info["example"])
    _check_run_dir(out, 30)
