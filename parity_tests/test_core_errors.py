"""Bad input raises a ValueError naming the argument, with the same wording in all three backends."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401
from triptych.common.checks import InputError
from triptych.common.params import init_mha_params
from jax_impl import attention as ja, masks as jmk, multihead as jm, positional as jp
from numpy_impl import attention as na, masks as nmk, multihead as nm, positional as np_
from torch_ref import attention as ta, masks as tmk, multihead as tm, positional as tp

BACKENDS = {
    "numpy": (dict(attention=na, masks=nmk, multihead=nm, positional=np_), np.asarray),
    "jax": (dict(attention=ja, masks=jmk, multihead=jm, positional=jp), jnp.asarray),
    "torch": (dict(attention=ta, masks=tmk, multihead=tm, positional=tp), lambda a: torch.from_numpy(np.asarray(a))),
}
R = np.random.default_rng(0)
Q, K, V = R.standard_normal((2, 3, 4)), R.standard_normal((2, 5, 4)), R.standard_normal((2, 5, 4))
X = R.standard_normal((2, 3, 8))
P = init_mha_params(8)
NAN_Q = Q.copy()
NAN_Q[0, 0, 0] = np.nan

BAD_CALLS = {
    "q and k head sizes differ": (lambda m, c: m["attention"].scaled_dot_product_attention(c(Q), c(K[..., :3]), c(V)),
                                  "k: expected last-axis size 4 to match q's last axis (d_head), got 3"),
    "k and v lengths differ": (lambda m, c: m["attention"].scaled_dot_product_attention(c(Q), c(K), c(V[:, :4])),
                               "v: expected sequence length 5 to match k's sequence axis (T_k), got 4"),
    "1-D query": (lambda m, c: m["attention"].scaled_dot_product_attention(c(Q[0, 0]), c(K), c(V)),
                  "q: expected at least 2 dimensions (..., T, D), got shape (4,)"),
    "empty sequence": (lambda m, c: m["attention"].scaled_dot_product_attention(c(Q[:, :0]), c(K), c(V)),
                       "q: expected a non-empty sequence (T) axis, got shape (2, 0, 4)"),
    "NaN in q": (lambda m, c: m["attention"].scaled_dot_product_attention(c(NAN_Q), c(K), c(V)),
                 "q: expected finite values, got NaN or inf"),
    "float mask": (lambda m, c: m["attention"].scaled_dot_product_attention(c(Q), c(K), c(V), c(np.ones((3, 5)))),
                   "mask: expected dtype bool (True = may attend), got dtype float64"),
    "mask of the wrong shape": (
        lambda m, c: m["attention"].scaled_dot_product_attention(c(Q), c(K), c(V), c(np.ones((3, 4), bool))),
        "mask: expected a shape broadcastable to (2, 3, 5) with (T_q, T_k) last, got (3, 4)"),
    "heads not dividing d_model": (lambda m, c: m["multihead"].split_heads(c(X), 3),
                                   "n_heads: expected a divisor of d_model=8, got 3"),
    "2-D input to multi-head": (lambda m, c: m["multihead"].multihead_attention(c(X[0]), P, 2),
                                "x: expected a 3-D array (B, T, C), got shape (3, 8)"),
    "params of the wrong width": (lambda m, c: m["multihead"].multihead_attention(c(X), init_mha_params(6), 2),
                                  "params['w_q']: expected shape (8, 8), got (6, 6)"),
    "odd d_model for sinusoidal": (lambda m, c: m["positional"].sinusoidal_encoding(10, 7),
                                   "d_model: expected an even size (the sinusoidal encoding pairs sin/cos channels), got 7"),
    "lengths beyond t_k": (lambda m, c: m["masks"].make_key_padding_mask([2, 9], 5),
                           "lengths: expected values in [0, t_k=5], got [2, 9]"),
    "unknown attention kernel": (
        lambda m, c: m["attention"].scaled_dot_product_attention(c(Q), c(K), c(V), kernel="flash"),
        "kernel: expected one of 'steps', 'fast', got 'flash'"),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("what", list(BAD_CALLS))
def test_bad_input_message_is_the_same_in_every_backend(backend, what):
    call, message = BAD_CALLS[what]
    mods, conv = BACKENDS[backend]
    with pytest.raises(ValueError) as info:
        call(mods, conv)
    assert isinstance(info.value, InputError)
    assert str(info.value) == message


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("kernel", ["fast", "steps"])
@pytest.mark.parametrize("bad", ["q", "k", "v"])
def test_nan_named_by_both_kernels(backend, kernel, bad):
    """scaled_dot_product_attention reads the values for NaN/inf once, by whichever kernel runs:
    flash.fast_attention's check for kernel="fast", its own for the plain steps. Both must name the
    argument."""
    mods, conv = BACKENDS[backend]
    qkv = {"q": Q.copy(), "k": K.copy(), "v": V.copy()}
    qkv[bad][0, 1, 2] = np.inf
    with pytest.raises(InputError) as info:
        mods["attention"].scaled_dot_product_attention(conv(qkv["q"]), conv(qkv["k"]), conv(qkv["v"]), kernel=kernel)
    assert str(info.value) == f"{bad}: expected finite values, got NaN or inf"
