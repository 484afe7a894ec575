"""The fused ops of the CUDA backend run by the NumPy oracle ``minitrans.kernels.reference``
(chosen by ``set_kernels("reference")``): each call downloads its device operands, runs the
oracle on the host and uploads the results. Slow by design (every call waits for the device and
copies both ways); it exists to check the device kernels against the oracle on real inputs."""
from __future__ import annotations

import functools

from ...kernels import reference as oracle
from .array import CudaArray, from_numpy, to_numpy

FUSED = ("softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
         "cross_entropy_forward", "cross_entropy_backward", "layer_norm_forward", "layer_norm_backward",
         "attention_forward", "attention_backward")


def _download(x):
    return to_numpy(x) if isinstance(x, CudaArray) else x


def _upload(r):
    if isinstance(r, tuple):
        return tuple(_upload(x) for x in r)
    return None if r is None else from_numpy(r)


def _on_host(name):
    fn = getattr(oracle, name)

    @functools.wraps(fn)
    def run(*args):
        return _upload(fn(*(_download(a) for a in args)))

    return run


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """The oracle's Adam step on host copies, written back into the three device state arrays."""
    state = [to_numpy(a).copy() for a in (param, exp_avg, exp_avg_sq)]
    oracle.adam_step(state[0], to_numpy(grad), state[1], state[2], lr, beta1, beta2, eps, weight_decay, step,
                     decoupled)
    for dev, host in zip((param, exp_avg, exp_avg_sq), state):
        dev[...] = host  # one upload and one device copy each: the arrays stay the same objects


FUNCTIONS = {name: _on_host(name) for name in FUSED}
FUNCTIONS["adam_step"] = adam_step
