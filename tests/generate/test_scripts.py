"""Smoke runs of the generation scripts: translate.py (report by length bucket, greedy and beam),
charlm.py (train, checkpoint, --sample), bench_generate.py (its PyTorch twin gives the same logits)."""
import json
import os
import sys

import numpy as np
import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "experiments")
sys.path.insert(0, EXPERIMENTS)


def test_translate_smoke(tmp_path):
    import translate

    info = translate.main(["--steps", "2", "--eval-every", "2", "--eval-size", "2", "--report-size", "1",
                           "--d-model", "16", "--ff", "16", "--layers", "1", "--beam", "2", "--quiet",
                           "--buckets", "5-10,31-40,41-45", "--no-plots",
                           "--out-dir", str(tmp_path / "tr")])
    rows = info["buckets"]
    assert [r["bucket"] for r in rows] == ["5-10", "31-40", "41-45"]
    assert [r["trained"] for r in rows] == [True, True, False]                 # trained on sources up to 40
    for r in rows:
        for k in ("greedy_bleu", "beam2_bleu", "greedy_seq_acc", "beam2_token_acc"):
            assert 0 <= r[k] <= 100
    saved = json.loads((tmp_path / "tr" / "summary.json").read_text())
    assert saved["buckets"] == json.loads(json.dumps(rows))
    assert (tmp_path / "tr" / "checkpoint.npz").exists()


def test_charlm_trains_checkpoints_and_samples(tmp_path, capsys):
    import charlm

    text = tmp_path / "t.txt"
    text.write_text("abcabcabd ünïcode " * 40, encoding="utf-8")
    info = charlm.main(["--text", str(text), "--steps", "2", "--eval-every", "2", "--eval-size", "2",
                        "--layers", "1", "--d-model", "16", "--heads", "2", "--block-size", "16", "--quiet",
                        "--no-plots",
                        "--out-dir", str(tmp_path / "lm")])
    assert info["steps"] == 2 and "--- sample ---" in capsys.readouterr().out
    out = charlm.main(["--sample", str(tmp_path / "lm" / "checkpoint.npz"), "--prompt", "ab", "--chars", "40"])
    assert out["sample"].startswith("ab") and len(out["sample"]) == 42
    assert set(out["sample"]) <= set("abcd üïnoe")
    with pytest.raises(SystemExit, match="never saw"):
        charlm.main(["--sample", str(tmp_path / "lm" / "checkpoint.npz"), "--prompt", "xyz"])


def test_bench_generate_torch_twin_matches():
    pytest.importorskip("torch")
    import bench_generate
    import minitrans as mt
    from minitrans.models import GPT, GPTConfig

    mt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, block_size=24, n_layer=2, n_head=2, n_embd=16, norm_first=True)).eval()
    row = bench_generate.bench_context(model, 8, 3, 1, np.random.default_rng(0))
    assert row["logits_max_abs_diff_vs_torch"] < 1e-4
    assert row["cached_ms_per_token"] > 0 and row["uncached_ms_per_token"] > 0
