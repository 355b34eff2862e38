"""Sampling probabilities (temperature, top-k, top-p) in NumPy and JAX against Hugging Face's own
logits warpers (torch_ref/sampling.py): the probabilities themselves, not samples, in float32 and
float64; hand-checkable cases; which tokens survive each filter; the same error in the three backends."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.tolerances import assert_close
from jax_impl.sampling import sampling_probs as jax_probs
from numpy_impl.sampling import sampling_probs as np_probs
from torch_ref.sampling import sampling_probs as hf_probs

SETTINGS = [dict(), dict(temperature=0.7), dict(temperature=1.8), dict(top_k=1), dict(top_k=7),
            dict(top_k=10_000), dict(top_p=0.9), dict(top_p=0.3), dict(top_p=1.0),
            dict(temperature=0.6, top_k=40, top_p=0.95), dict(temperature=1.3, top_k=3, top_p=0.5)]


def _ref(logits, **kw):
    return hf_probs(torch.from_numpy(logits), **kw).numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_probabilities_equal_hf_warpers(dtype, kw):
    # A vocabulary-sized row as a real model gives it (49,152 tokens, logits spread over ~20), and a
    # batch of small rows with a leading axis.
    rng = np.random.default_rng(0)
    for logits in ((rng.standard_normal((2, 49_152)) * 4).astype(dtype),
                   (rng.standard_normal((3, 2, 50)) * 2).astype(dtype)):
        ref = _ref(logits, **kw)
        for name, probs in (("numpy", np_probs(logits, **kw)), ("jax", np.asarray(jax_probs(logits, **kw)))):
            assert probs.dtype == logits.dtype and probs.shape == logits.shape
            assert np.array_equal(probs > 0, ref > 0), f"{name}: a different set of tokens survives"
            assert_close(probs, ref, dtype, what=f"{name} {kw}")
            assert_close(probs.sum(-1), np.ones(logits.shape[:-1]), dtype, what=f"{name} row sums")


def test_by_hand():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    for f in (np_probs, lambda x, **kw: np.asarray(jax_probs(x, **kw))):
        np.testing.assert_allclose(f(logits), [0.5, 0.3, 0.15, 0.05], rtol=1e-12)
        np.testing.assert_allclose(f(logits, top_k=2), [0.625, 0.375, 0, 0], rtol=1e-12)
        # top_p 0.79: 0.5 + 0.3 reaches it, so the last two go; 0.81 needs the third token too. (At
        # exactly 0.8 the tail 0.05 + 0.15 meets 1 - 0.8 and rounding decides, in HF's warper as here.)
        np.testing.assert_allclose(f(logits, top_p=0.79), [0.625, 0.375, 0, 0], rtol=1e-12)
        np.testing.assert_allclose(f(logits, top_p=0.81), [0.5, 0.3, 0.15, 0] / np.float64(0.95), rtol=1e-12)
        # Temperature 0.5 squares the probabilities before renormalising.
        sq = np.array([0.25, 0.09, 0.0225, 0.0025])
        np.testing.assert_allclose(f(logits, temperature=0.5), sq / sq.sum(), rtol=1e-12)
        # The most likely token survives any top_p.
        np.testing.assert_allclose(f(logits, top_p=1e-9), [1, 0, 0, 0])


def test_top_k_keeps_every_tie_with_the_kth_logit():
    logits = np.array([[3.0, 1.0, 2.0, 2.0, 0.0]])
    ref = _ref(logits, top_k=2)
    for probs in (np_probs(logits, top_k=2), np.asarray(jax_probs(logits, top_k=2))):
        assert np.array_equal(probs > 0, ref > 0) and (probs > 0).sum() == 3
        assert_close(probs, ref, "float64")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), v=st.integers(2, 300), top_k=st.one_of(st.none(), st.integers(1, 400)),
       top_p=st.one_of(st.none(), st.floats(0.01, 1.0)), temperature=st.floats(0.2, 3.0))
def test_any_settings_equal_hf(seed, v, top_k, top_p, temperature):
    logits = np.random.default_rng(seed).standard_normal((2, v)) * 3
    ref = _ref(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    for probs in (np_probs(logits, temperature, top_k, top_p), np.asarray(jax_probs(logits, temperature, top_k, top_p))):
        assert np.array_equal(probs > 0, ref > 0)
        assert_close(probs, ref, "float64")


BAD = [(dict(temperature=0), "temperature: expected a finite number > 0"),
       (dict(temperature=-1.0), "temperature: expected a finite number > 0"),
       (dict(top_k=0), "top_k: expected a positive integer, got 0"),
       (dict(top_k=2.5), "top_k: expected a positive integer, got 2.5"),
       (dict(top_p=0.0), "top_p: expected a number in (0, 1], got 0.0"),
       (dict(top_p=1.5), "top_p: expected a number in (0, 1], got 1.5")]


@pytest.mark.parametrize("kw,message", BAD)
def test_bad_settings_same_words_in_three_backends(kw, message):
    logits = np.zeros((1, 5))
    for f, x in ((np_probs, logits), (jax_probs, logits), (hf_probs, torch.from_numpy(logits))):
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            f(x, **kw)


def test_bad_logits_same_words_in_three_backends():
    for bad, message in ((np.array([1, 2, 3]), "logits: expected a floating-point array"),
                         (np.array([1.0, np.nan]), "logits: expected finite values")):
        for f, x in ((np_probs, bad), (jax_probs, bad), (hf_probs, torch.from_numpy(bad))):
            with pytest.raises(InputError, match=message):
                f(x)


# Top-p and top-k at their boundaries, worked by hand. Equal logits give probabilities that are exact
# in binary (1/4, 1/8), so the cumulative sums land exactly on 1 - top_p and the comparison itself
# decides, not rounding: HF's TopPLogitsWarper drops a token when the probability of it and every
# less likely one is <= 1 - top_p (equality drops), and TopKLogitsWarper keeps every logit equal to
# the k-th. Which of several tied tokens survive follows the ascending sort (the later indices).
#   (logits, top_k, top_p, expected probabilities)
BOUNDARY = [
    # Four equal logits, top_p 0.5: the tail 1/4 + 1/4 is exactly 1 - 0.5, so two go and two stay.
    ([0, 0, 0, 0], None, 0.5, [0, 0, 1 / 2, 1 / 2]),
    # top_p 0.75: only the first 1/4 meets 1 - 0.75; three stay.
    ([0, 0, 0, 0], None, 0.75, [0, 1 / 3, 1 / 3, 1 / 3]),
    # A hair above 0.5 needs a third token; a hair below is still two.
    ([0, 0, 0, 0], None, 0.5 + 1e-6, [0, 1 / 3, 1 / 3, 1 / 3]),
    ([0, 0, 0, 0], None, 0.5 - 1e-6, [0, 0, 1 / 2, 1 / 2]),
    # Eight equal, top_p 0.25: six eighths make exactly 1 - 0.25.
    ([1.5] * 8, None, 0.25, [0] * 6 + [1 / 2, 1 / 2]),
    # Tokens whose probability underflows to 0 sit below the cut and change nothing.
    ([3, 3, 3, 3, -1000, -1000], None, 0.5, [0, 0, 1 / 2, 1 / 2, 0, 0]),
    # top-k first keeps the four tied best (ties with the k-th stay), then top-p halves them.
    ([5, 1, 5, 5, 0, 5], 2, 0.5, [0, 0, 0, 1 / 2, 0, 1 / 2]),
    # top-k ties alone: k = 2 keeps all three logits equal to the 2nd largest.
    ([1, 2, 2, 2, 0], 2, None, [0, 1 / 3, 1 / 3, 1 / 3, 0]),
    ([2, 2, 1], 1, None, [1 / 2, 1 / 2, 0]),
    ([0, 0, 0, 0], 3, None, [1 / 4] * 4),
]


def _hf_warpers(logits, top_k, top_p):
    """HF's warpers called directly (no torch_ref in between), softmax after."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    scores = torch.from_numpy(logits)[None]
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)[0].numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("logits,top_k,top_p,expected", BOUNDARY,
                         ids=[f"{len(b[0])}-logits-k{b[1]}-p{b[2]}" for b in BOUNDARY])
def test_top_p_and_top_k_at_the_boundary_by_hand(dtype, logits, top_k, top_p, expected):
    logits = np.array(logits, dtype=dtype)
    expected = np.array(expected, dtype=dtype)
    ref = _hf_warpers(logits, top_k, top_p)
    # The hand-worked answer is HF's answer, exactly: every probability is a simple fraction.
    np.testing.assert_allclose(ref, expected, rtol=1e-6 if dtype == "float32" else 1e-15, atol=0)
    for name, probs in (("numpy", np_probs(logits, top_k=top_k, top_p=top_p)),
                        ("jax", np.asarray(jax_probs(logits, top_k=top_k, top_p=top_p))),
                        ("torch_ref", hf_probs(torch.from_numpy(logits), top_k=top_k, top_p=top_p).numpy())):
        kept = int((probs > 0).sum())
        assert kept == int((expected > 0).sum()), f"{name}: keeps {kept} tokens, HF's warpers {int((ref > 0).sum())}"
        assert np.array_equal(probs > 0, ref > 0), f"{name}: other tied tokens survive than HF's"
        np.testing.assert_allclose(probs, expected, rtol=1e-6 if dtype == "float32" else 1e-15, atol=0,
                                   err_msg=name)
