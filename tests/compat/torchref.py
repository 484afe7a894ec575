"""Comparing a minitrans module with its PyTorch twin: copy the weights across, run both on
the same inputs, compare outputs and every gradient."""
from __future__ import annotations

import numpy as np

import minitrans as mt


def copy_weights(torch_module, mt_module) -> None:
    """Load a PyTorch module's state dict into the minitrans module (same keys, same shapes)."""
    mt_module.load_state_dict({k: v.detach().cpu().numpy() for k, v in torch_module.state_dict().items()})


def compare_grads(torch_module, mt_module, atol: float = 1e-5) -> None:
    """Every named parameter has the same gradient in both modules."""
    tp = dict(torch_module.named_parameters())
    mp = dict(mt_module.named_parameters())
    assert sorted(tp) == sorted(mp), (sorted(tp), sorted(mp))
    for name, p in tp.items():
        assert mp[name].grad is not None, f"{name}: no gradient in minitrans"
        np.testing.assert_allclose(mp[name].grad.numpy(), p.grad.numpy(), atol=atol, rtol=1e-5, err_msg=name)


def pair(rng: np.random.Generator, shape, torch, requires_grad: bool = True):
    """The same float64 values as a torch tensor and a minitrans tensor."""
    a = rng.standard_normal(shape)
    return (torch.tensor(a, requires_grad=requires_grad), mt.tensor(a, requires_grad=requires_grad))
