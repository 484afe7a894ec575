"""A tiny run of experiments/reverse_lstm.py: it trains, evaluates, checkpoints and resumes."""
import json
import os
import sys

import numpy as np

import minitrans as mt

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "experiments")
sys.path.insert(0, EXPERIMENTS)

TINY = ["--batch-size", "4", "--eval-every", "6", "--eval-size", "4", "--log-every", "3", "--embed", "8", "--hidden", "8",
        "--layers", "1", "--max-len", "5", "--quiet", "--no-plots"]


def test_reverse_lstm_smoke_and_resume(tmp_path, capsys):
    import reverse_lstm

    out = str(tmp_path / "rl")
    info = reverse_lstm.main(["--steps", "6", "--out-dir", out] + TINY)
    assert info["model"] == "lstm" and info["steps"] == 6 and 0.0 <= info["held_out_exact_match"] <= 1.0
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["steps"] == 6
    ck = mt.load(os.path.join(out, "checkpoint.npz"))
    assert ck["model_spec"]["class"] == "LSTMSeq2Seq" and "encoder.weight_hh_l0" in ck["model"]
    model = mt.models.from_checkpoint(ck)                       # the registered class is rebuilt
    src = mt.tensor(np.array([[4, 5, 6, 0, 0], [7, 8, 9, 10, 11]]))
    assert model.greedy(src, 1, 6).shape == (2, 6)

    info2 = reverse_lstm.main(["--steps", "9", "--out-dir", out, "--resume"] + TINY)
    assert "resuming " in capsys.readouterr().out and info2["steps"] == 9


def test_left_padding_keeps_the_last_real_token_last():
    import reverse_lstm

    mt.manual_seed(0)
    model = reverse_lstm.LSTMSeq2Seq(reverse_lstm.LSTMSeq2SeqConfig(vocab_size=12, embed_dim=4, hidden_size=5,
                                                                    num_layers=1))
    padded = model.encode(mt.tensor(np.array([[3, 4, 0, 0], [5, 6, 7, 8]])))            # right-padded batch
    want = model.encoder(model.embed(mt.tensor(np.array([[0, 0, 3, 4], [5, 6, 7, 8]]))))[1]
    for a, b in zip(padded, want):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
