"""Course B: correct submissions pass in every framework (three mask conventions among them), and
every named mistake, planted in a sample submission, is named by the checker."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from triptych.crosscheck import check
from triptych.crosscheck.exercises import get_group
from triptych.crosscheck.session import check_file

SUBMISSIONS = Path(__file__).with_name("submissions")

# The NumPy solution's helpers, so each planted mistake changes exactly one line of it.
BASE = (SUBMISSIONS / "course_b_numpy.py").read_text()


def _load(source: str) -> dict:
    namespace: dict = {}
    exec(compile(BASE + "\n" + textwrap.dedent(source), "<planted>", "exec"), namespace)
    return namespace


# variant name -> (exercise, the one redefinition that plants it)
PLANTED = {
    "k_untransposed": ("pairwise_similarities", "def pairwise_similarities(Q, K):\n    return Q @ K\n"),
    "no_scale": ("attn_scaled", "def attn_scaled(A, n_embd, n_heads):\n    return A\n"),
    "scale_1_over_d": ("attn_scaled", "def attn_scaled(A, n_embd, n_heads):\n    return A / (n_embd / n_heads)\n"),
    "scale_sqrt_n_embd": ("attn_scaled", "def attn_scaled(A, n_embd, n_heads):\n    return A / math.sqrt(n_embd)\n"),
    "softmax_query_axis": ("attn_softmax", """
        def attn_softmax(A):
            e = np.exp(A - A.max(axis=-2, keepdims=True))
            return e / e.sum(axis=-2, keepdims=True)
        """),
    "weights_transposed": ("compute_outputs", "def compute_outputs(A, V):\n    return np.swapaxes(A, -1, -2) @ V\n"),
    "mask_includes_next": ("make_causal_mask",
                           "def make_causal_mask(n_tok):\n    return np.tril(np.ones((n_tok, n_tok)), k=1)\n"),
    "mask_excludes_self": ("make_causal_mask",
                           "def make_causal_mask(n_tok):\n    return np.tril(np.ones((n_tok, n_tok), dtype=bool), k=-1)\n"),
    "mask_upper": ("make_causal_mask", "def make_causal_mask(n_tok):\n    return np.triu(np.ones((n_tok, n_tok)))\n"),
    "mask_times_scores": ("apply_causal_mask", """
        def make_causal_mask(n_tok):
            return np.tril(np.ones((n_tok, n_tok)))
        def apply_causal_mask(mask, A):
            return A * mask
        """),
    # The classic pair: a True = blocked mask applied as if True meant "may attend".
    "mask_convention_mismatch": ("apply_causal_mask", "def apply_causal_mask(mask, A):\n    return np.where(mask, A, -np.inf)\n"),
    "apply_mask_shifted": ("apply_causal_mask",
                           "def apply_causal_mask(mask, A):\n    return np.where(np.triu(mask, k=2), -np.inf, A)\n"),
    "split_reshape_only": ("split_heads", """
        def split_heads(x, n_heads):
            B, T, C = x.shape
            return x.reshape(B, n_heads, T, C // n_heads)
        """),
    "split_no_transpose": ("split_heads", """
        def split_heads(x, n_heads):
            B, T, C = x.shape
            return x.reshape(B, T, n_heads, C // n_heads)
        """),
    "merge_no_transpose": ("merge_heads", """
        def merge_heads(y):
            B, nh, T, hs = y.shape
            return y.reshape(B, T, nh * hs)
        """),
    "qkv_reshape_only": ("split_heads_qkv", """
        def split_heads_qkv(Q, K, V, n_heads):
            B, T, C = Q.shape
            return tuple(t.reshape(B, n_heads, T, C // n_heads) for t in (Q, K, V))
        """),
    "sa_no_scale": ("self_attention", "def attn_scaled(A, n_embd, n_heads):\n    return A\n"),
    "sa_scale_embd": ("self_attention", "def attn_scaled(A, n_embd, n_heads):\n    return A / math.sqrt(n_embd)\n"),
    "sa_scale_d": ("self_attention", "def attn_scaled(A, n_embd, n_heads):\n    return A / (n_embd / n_heads)\n"),
    "sa_softmax_query_axis": ("self_attention", """
        def attn_softmax(A):
            e = np.exp(A - A.max(axis=-2, keepdims=True))
            return e / e.sum(axis=-2, keepdims=True)
        """),
    "sa_zero_after_softmax": ("self_attention", """
        def self_attention(Q, K, V, n_heads=1, causal=True):
            n_embd, T = Q.shape[-1], Q.shape[1]
            Q, K, V = split_heads_qkv(Q, K, V, n_heads)
            W = attn_softmax(attn_scaled(pairwise_similarities(Q, K), n_embd, n_heads))
            if causal:
                W = W * np.tril(np.ones((T, T)))
            return merge_heads(compute_outputs(W, V))
        """),
    "sa_mask_zero": ("self_attention", "def apply_causal_mask(mask, A):\n    return A * ~mask\n"),
    "sa_mask_shifted": ("self_attention",
                        "def make_causal_mask(n_tok):\n    return np.triu(np.ones((n_tok, n_tok), dtype=bool), k=2)\n"),
    "sa_split_no_transpose": ("self_attention", """
        def split_heads(x, n_heads):
            B, T, C = x.shape
            return x.reshape(B, n_heads, T, C // n_heads)
        def merge_heads(y):
            B, nh, T, hs = y.shape
            return y.reshape(B, T, nh * hs)
        """),
}


def test_every_course_b_variant_has_a_planted_test():
    """Every named mistake; the finite fill (-1e9) is a convention, tested in test_check_verdicts.py."""
    names = {v.name for ex in get_group("course-b") for v in ex.variants if v.kind == "mistake"}
    assert names == set(PLANTED)


@pytest.mark.parametrize("variant", sorted(PLANTED))
def test_planted_mistake_is_named(variant):
    exercise, source = PLANTED[variant]
    ns = _load(source)
    report = check(exercise, ns[exercise], framework="numpy", make_causal_mask=ns["make_causal_mask"])
    assert not report.ok
    assert report.mistakes == {variant}, str(report)


def test_the_unplanted_numpy_solution_passes_in_process():
    ns = _load("")
    for ex in get_group("course-b"):
        report = check(ex.name, ns[ex.defines], framework="numpy", make_causal_mask=ns["make_causal_mask"])
        assert report.ok, str(report)


@pytest.mark.parametrize("framework", ["numpy", "torch", "jax"])
def test_correct_submission_passes_every_case_in_the_sandbox(framework):
    report = check_file(str(SUBMISSIONS / f"course_b_{framework}.py"))
    assert report.framework == framework
    assert len(report.rows) == sum(len(ex.cases) for ex in get_group("course-b"))
    assert report.ok, [(r["exercise"], r["case"], r["message"]) for r in report.rows if not r["ok"]]
    conventions = {r["message"] for r in report.rows if r["exercise"] == "make_causal_mask"}
    expected = {"numpy": "True = blocked", "torch": "ones on and below", "jax": "True = may attend"}[framework]
    assert all(expected in m for m in conventions), conventions


def test_course_own_test_cases_use_its_tolerance():
    report = check_file(str(SUBMISSIONS / "course_b_numpy.py"), exercise_names=["self_attention"])
    course = [r for r in report.rows if r["case"].startswith("course test")]
    assert len(course) == 3 and all(r["course_tol"] == 1e-4 and r["max_abs_err"] <= 1e-12 for r in course)
