"""A PyTorch program (programs/char_lm.py) runs on minitrans with only its import lines swapped;
with PyTorch installed it also runs there from the same initial weights and the losses agree."""
import os
import sys
import types

import numpy as np
import pytest

PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs", "char_lm.py")
SWAPS = [("import torch\n", "import minitrans as torch\n"),
         ("import torch.nn as nn\n", "import minitrans.nn as nn\n"),
         ("import torch.nn.functional as F\n", "import minitrans.nn.functional as F\n")]


def load_program(lib: str):
    """The program as a module; for minitrans its three import lines are swapped and nothing else."""
    with open(PROGRAM) as f:
        src = f.read()
    if lib == "minitrans":
        for old, new in SWAPS:
            assert src.count(old) == 1, old
            src = src.replace(old, new)
    name = f"char_lm_{lib}"
    mod = types.ModuleType(name)
    mod.__file__ = PROGRAM
    sys.modules[name] = mod                  # whole-module pickles name the program's classes by module
    exec(compile(src, PROGRAM, "exec"), mod.__dict__)
    return mod


def _check(result, vocab):
    for name, r in result.items():
        assert len(r["train"]) == 4 and all(np.isfinite(r["train"])), name
        assert np.isfinite(r["eval"]) and r["eval"] < np.log(len(vocab)) + 0.5, name
        assert len(r["sample"]) == 21 and set(r["sample"]) <= set(vocab), name


def test_program_runs_on_minitrans():
    prog = load_program("minitrans")
    corpus, models = prog.build()
    assert type(models["lstm"].rnn).__module__ == "minitrans.nn.rnn"
    result = prog.train(corpus, models, steps=4)
    _check(result, corpus.chars)
    assert result["transformer"]["train"][-1] < result["transformer"]["train"][0]


def test_program_losses_agree_with_pytorch():
    torch = pytest.importorskip("torch")
    ours, theirs = load_program("minitrans"), load_program("torch")
    corpus_m, models_m = ours.build()
    corpus_t, models_t = theirs.build()
    for name in models_t:                    # the same initial weights in both
        models_m[name].load_state_dict({k: v.numpy() for k, v in models_t[name].state_dict().items()})
    starts = [3, 17, 0, 9]
    res_m = ours.train(corpus_m, models_m, starts=[ours.torch.tensor(s) for s in starts])
    res_t = theirs.train(corpus_t, models_t, starts=[torch.tensor(s) for s in starts])
    _check(res_m, corpus_m.chars)
    for name in res_t:
        np.testing.assert_allclose(res_m[name]["train"], res_t[name]["train"], rtol=2e-5, err_msg=name)
        np.testing.assert_allclose(res_m[name]["eval"], res_t[name]["eval"], rtol=2e-5, err_msg=name)
