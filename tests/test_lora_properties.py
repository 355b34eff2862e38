"""LoRA properties over random shapes (hypothesis): the NumPy backward equals jax.grad of the JAX
forward, merged equals unmerged, and the adapter's change has rank <= r."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.tolerances import assert_close
from jax_impl import lora as JL
from numpy_impl import lora as NL
from numpy_impl.lora import lora_linear_backward, lora_linear_forward


@st.composite
def lora_problem(draw):
    d_in, d_out = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    r = draw(st.integers(1, min(d_in, d_out)))
    lead = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal(lead + (d_in,)),
        "w": rng.standard_normal((d_out, d_in)),
        "b": rng.standard_normal(d_out),
        "lora": NL.init_lora_params(d_in, d_out, r, "random", seed=seed),
        "dy": rng.standard_normal(lead + (d_out,)),
        "mask": NL.lora_dropout_mask(lead + (d_in,), 0.3, seed=seed) if draw(st.booleans()) else None,
        "alpha": draw(st.sampled_from([1.0, 4.0, 16.0])),
        "rs": draw(st.booleans()),
    }


@settings(max_examples=25, deadline=None)
@given(lora_problem())
def test_numpy_backward_equals_jax_grad(c):
    grads = lora_linear_backward(c["dy"], lora_linear_forward(c["x"], c["w"], c["b"], c["lora"], c["alpha"], c["rs"],
                                                              dropout_mask=c["mask"])[1])
    mask = None if c["mask"] is None else jnp.asarray(c["mask"])

    def loss(lora, x):  # <y, dy>: its gradient with respect to y is dy
        y = JL.lora_linear(x, jnp.asarray(c["w"]), jnp.asarray(c["b"]), lora, c["alpha"], c["rs"], dropout_mask=mask)
        return jnp.sum(y * c["dy"])

    g_lora, g_x = jax.grad(loss, argnums=(0, 1))({k: jnp.asarray(v) for k, v in c["lora"].items()}, jnp.asarray(c["x"]))
    assert_close(grads["lora_A"], g_lora["lora_A"], "float64", kind="grad", what="dA")
    assert_close(grads["lora_B"], g_lora["lora_B"], "float64", kind="grad", what="dB")
    assert_close(grads["x"], g_x, "float64", kind="grad", what="dx")


@settings(max_examples=25, deadline=None)
@given(lora_problem())
def test_merged_equals_unmerged_and_delta_rank_at_most_r(c):
    w_merged = NL.merge_lora(c["w"], c["lora"], c["alpha"], c["rs"])
    y_unmerged = NL.lora_linear(c["x"], c["w"], c["b"], c["lora"], c["alpha"], c["rs"])
    assert_close(c["x"] @ w_merged.T + c["b"], y_unmerged, "float64")
    assert_close(NL.unmerge_lora(w_merged, c["lora"], c["alpha"], c["rs"]), c["w"], "float64")
    r = c["lora"]["lora_A"].shape[0]
    assert np.linalg.matrix_rank(NL.lora_delta(c["lora"], c["alpha"], c["rs"])) <= r
