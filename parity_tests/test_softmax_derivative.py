"""jax_impl's masked softmax carries its own derivative (a custom_jvp, y (dx - sum(dx y))): forward
mode and reverse mode both equal torch autograd's derivative of the masked softmax, and a fully
masked row's tangent is exactly zero."""
import jax
import jax.numpy as jnp
import numpy as np
import torch

import jax_impl  # noqa: F401  (x64 on)
from triptych.common.tolerances import assert_close
from jax_impl import attention as ja

RNG = np.random.default_rng(7)


def _case():
    scores = RNG.standard_normal((2, 3, 4, 5))
    mask = RNG.random((2, 1, 4, 5)) > 0.3
    mask[..., 0] = True  # torch's masked softmax is NaN on an empty row: every row keeps a key
    return scores, mask, RNG.standard_normal(scores.shape)


def _torch_softmax(s, mask):
    return torch.softmax(s.masked_fill(~torch.from_numpy(mask), float("-inf")), dim=-1)


def test_forward_mode_tangent_equals_torch():
    scores, mask, t = _case()
    _, tangent = jax.jvp(lambda s: ja.attn_softmax(s, jnp.asarray(mask)), (jnp.asarray(scores),),
                         (jnp.asarray(t),))
    _, ref = torch.func.jvp(lambda s: _torch_softmax(s, mask), (torch.from_numpy(scores),),
                            (torch.from_numpy(t),))
    assert_close(tangent, ref, "float64", "grad", "jvp of the masked softmax")


def test_reverse_mode_gradient_equals_torch():
    scores, mask, g = _case()
    _, pull = jax.vjp(lambda s: ja.attn_softmax(s, jnp.asarray(mask)), jnp.asarray(scores))
    s = torch.from_numpy(scores).requires_grad_()
    _torch_softmax(s, mask).backward(torch.from_numpy(g))
    assert_close(pull(jnp.asarray(g))[0], s.grad, "float64", "grad", "vjp of the masked softmax")


def test_fully_masked_row_has_zero_weights_and_zero_tangent():
    scores, mask, t = _case()
    mask[0, 0, 1] = False  # batch 0, query 1 may attend to nothing
    y, tangent = jax.jvp(lambda s: ja.attn_softmax(s, jnp.asarray(mask)), (jnp.asarray(scores),),
                         (jnp.asarray(t),))
    assert np.all(np.asarray(y)[0, :, 1] == 0.0)
    assert np.all(np.asarray(tangent)[0, :, 1] == 0.0)
