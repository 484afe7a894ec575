"""``ops.hook_point.HookPoint``: identity forward; its backward hands the gradients to a callback
and passes on what the callback returns (module backward hooks are built on it)."""
import numpy as np

import minitrans as mt
from minitrans.ops.hook_point import HookPoint


def test_forward_is_identity_and_backward_passes_callback_results():
    a = mt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    b = mt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    seen = []

    def on_backward(grads):
        seen.append([g.numpy().copy() for g in grads])
        return [grads[0] * 10.0, None]            # scale the first gradient, drop the second

    packed = HookPoint.apply(a, b, on_backward=on_backward, device=a.device)
    np.testing.assert_array_equal(packed.numpy(), np.array([0, 1, 2, 3, 4, 5, 1, 2], float))
    weights = mt.tensor(np.arange(1.0, 9.0))
    (packed * weights).sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0][0], np.arange(1.0, 7.0).reshape(2, 3))   # unpacked per input
    np.testing.assert_array_equal(seen[0][1], np.array([7.0, 8.0]))
    np.testing.assert_array_equal(a.grad.numpy(), 10.0 * np.arange(1.0, 7.0).reshape(2, 3))
    assert b.grad is None


def test_single_tensor_keeps_its_shape_and_dtype():
    a = mt.tensor(np.ones((2, 2), np.float32), requires_grad=True)
    out = HookPoint.apply(a, on_backward=lambda grads: [g.double() for g in grads], device=a.device)
    assert out.shape == (2, 2)
    (out * 3.0).sum().backward()
    assert a.grad.dtype is mt.float32                 # cast back to the input's dtype
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 2), 3.0, np.float32))
