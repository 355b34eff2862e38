"""Course A: correct submissions pass in every framework, the skeleton's weight names load, the class
may not call the standalone functions, and every named mistake, planted in a sample submission,
is named by the checker."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from triptych.crosscheck import check
from triptych.crosscheck.exercises import get, get_group
from triptych.crosscheck.exercises.course_a import TITLE
from triptych.crosscheck.session import check_file
from triptych.crosscheck.skeleton import render

SUBMISSIONS = Path(__file__).with_name("submissions")
HEADER = "import math\nimport numpy as np\n"

# Short NumPy solutions; each planted mistake edits one or two of their lines.
QKV = '''
def get_multihead_qkv(x, params, n_heads, kv=None):
    kv = x if kv is None else kv
    def heads(t, n):
        y = t @ params["w_" + n].T + params["b_" + n]
        B, T, C = y.shape
        return y.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)
    return heads(x, "q"), heads(kv, "k"), heads(kv, "v")
'''
CMA = '''
def calculate_multihead_attention(q, k, v, mask=None):
    s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    w = e / e.sum(axis=-1, keepdims=True)
    return w @ v, w
'''
MHA = '''
class MultiHeadAttention:
    def __init__(self, d_model, n_heads):
        self.n_heads = n_heads
    def __call__(self, query, key, value, mask=None):
        H = self.n_heads
        def heads(t, W, b):
            B, T, C = t.shape
            return (t @ W.T + b).reshape(B, T, H, C // H).transpose(0, 2, 1, 3)
        q = heads(query, self.W_q, self.b_q)
        k = heads(key, self.W_k, self.b_k)
        v = heads(value, self.W_v, self.b_v)
        s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        w = e / e.sum(axis=-1, keepdims=True)
        B, _, T, D = q.shape
        merged = (w @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D)
        return merged @ self.W_o.T + self.b_o, w
'''
PE = '''
class PositionalEncoding:
    def __init__(self, d_model, max_len=5000):
        pos = np.arange(max_len)[:, None]
        angles = pos / 10000.0 ** (np.arange(0, d_model, 2) / d_model)
        self.pe = np.zeros((max_len, d_model))
        self.pe[:, 0::2] = np.sin(angles)
        self.pe[:, 1::2] = np.cos(angles)
    def __call__(self, x):
        return x + self.pe[: x.shape[1]].astype(x.dtype)
'''
SOURCES = {"get_multihead_qkv": QKV, "calculate_multihead_attention": CMA, "MultiHeadAttention": MHA,
           "PositionalEncoding": PE}
MERGE_T = "(w @ v).transpose(0, 2, 1, 3).reshape"
RETURN = "return merged @ self.W_o.T + self.b_o, w"
SIN_COS = "self.pe[:, 0::2] = np.sin(angles)\n        self.pe[:, 1::2] = np.cos(angles)"

# variant -> (exercise, [(text in the solution, its planted replacement), ...])
PLANTED = {
    "qkv_split_no_transpose": ("get_multihead_qkv", [("y.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)",
                                                      "y.reshape(B, n_heads, T, C // n_heads)")]),
    "qkv_not_split": ("get_multihead_qkv", [("return y.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)",
                                             "return y")]),
    "qkv_no_bias": ("get_multihead_qkv", [(' + params["b_" + n]', "")]),
    "qkv_weight_untransposed": ("get_multihead_qkv", [('params["w_" + n].T', 'params["w_" + n]')]),
    "qkv_cross_from_x": ("get_multihead_qkv", [('heads(kv, "k"), heads(kv, "v")', 'heads(x, "k"), heads(x, "v")')]),
    "cma_no_scale": ("calculate_multihead_attention", [(" / math.sqrt(q.shape[-1])", "")]),
    "cma_scale_d_model": ("calculate_multihead_attention", [("math.sqrt(q.shape[-1])",
                                                             "math.sqrt(q.shape[1] * q.shape[-1])")]),
    "cma_softmax_query_axis": ("calculate_multihead_attention", [("axis=-1", "axis=-2")]),
    "cma_mask_inverted": ("calculate_multihead_attention", [("np.where(mask, s, -np.inf)", "np.where(mask, -np.inf, s)")]),
    "cma_zero_after_softmax": ("calculate_multihead_attention", [
        ("s = np.where(mask, s, -np.inf)", "pass"), ("return w @ v, w", "w = w if mask is None else w * mask\n    return w @ v, w")]),
    "cma_weights_averaged": ("calculate_multihead_attention", [("return w @ v, w", "return w @ v, w.mean(axis=1)")]),
    "mha_no_scale": ("MultiHeadAttention", [(" / math.sqrt(q.shape[-1])", "")]),
    "mha_scale_d_model": ("MultiHeadAttention", [("math.sqrt(q.shape[-1])", "math.sqrt(query.shape[-1])")]),
    "mha_split_no_transpose": ("MultiHeadAttention", [(".reshape(B, T, H, C // H).transpose(0, 2, 1, 3)",
                                                       ".reshape(B, H, T, C // H)"), (MERGE_T, "(w @ v).reshape")]),
    "mha_merge_no_transpose": ("MultiHeadAttention", [(MERGE_T, "(w @ v).reshape")]),
    "mha_softmax_query_axis": ("MultiHeadAttention", [("axis=-1", "axis=-2")]),
    "mha_weights_averaged": ("MultiHeadAttention", [(RETURN, RETURN.replace(", w", ", w.mean(axis=1)"))]),
    "mha_no_bias": ("MultiHeadAttention", [("(t @ W.T + b)", "(t @ W.T)"), (" + self.b_o", "")]),
    "mha_no_out_proj": ("MultiHeadAttention", [(RETURN, "return merged, w")]),
    "mha_mask_inverted": ("MultiHeadAttention", [("np.where(mask, s, -np.inf)", "np.where(mask, -np.inf, s)")]),
    "mha_cross_from_query": ("MultiHeadAttention", [("heads(key,", "heads(query,"), ("heads(value,", "heads(query,")]),
    "mha_weight_untransposed": ("MultiHeadAttention", [("t @ W.T", "t @ W"), ("merged @ self.W_o.T", "merged @ self.W_o")]),
    "pe_concatenated": ("PositionalEncoding", [(SIN_COS, "self.pe[:] = np.concatenate([np.sin(angles), np.cos(angles)], -1)")]),
    "pe_sin_cos_swapped": ("PositionalEncoding", [(SIN_COS, SIN_COS.replace("sin", "SIN").replace("cos", "sin")
                                                   .replace("SIN", "cos"))]),
    "pe_positions_from_1": ("PositionalEncoding", [("np.arange(max_len)", "np.arange(1, max_len + 1)")]),
    "pe_exponent_4i": ("PositionalEncoding", [("(np.arange(0, d_model, 2) / d_model)", "(2 * np.arange(0, d_model, 2) / d_model)")]),
    "pe_batch_axis": ("PositionalEncoding", [("self.pe[: x.shape[1]]", "self.pe[: x.shape[0], None, :]")]),
}


def _build(exercise: str, edits=()):
    source = SOURCES[exercise]
    for old, new in edits:
        assert old in source, f"the planted edit must change the solution: {old!r}"
        source = source.replace(old, new)
    namespace: dict = {}
    exec(compile(HEADER + source, "<planted>", "exec"), namespace)
    return namespace[exercise]


def test_every_course_a_variant_has_a_planted_test():
    names = {v.name for ex in get_group("course-a") for v in ex.variants}
    assert names == set(PLANTED)


@pytest.mark.parametrize("exercise", sorted(SOURCES))
def test_the_unplanted_solution_passes_in_process(exercise):
    report = check(exercise, _build(exercise), framework="numpy")
    assert report.ok, str(report)


@pytest.mark.parametrize("variant", sorted(PLANTED))
def test_planted_mistake_is_named(variant):
    exercise, edits = PLANTED[variant]
    report = check(exercise, _build(exercise, edits), framework="numpy")
    assert not report.ok
    assert variant in report.mistakes, str(report)


@pytest.mark.parametrize("framework", ["numpy", "torch", "jax"])
def test_correct_submission_passes_every_case_in_the_sandbox(framework):
    report = check_file(str(SUBMISSIONS / f"course_a_{framework}.py"))
    assert report.framework == framework
    assert len(report.rows) == sum(len(ex.cases) for ex in get_group("course-a"))
    assert report.ok, [(r["exercise"], r["case"], r["message"]) for r in report.rows if not r["ok"]]
    course = [r for r in report.rows if r["course_tol"] is not None]
    assert course and all(r["course_tol"] == 1e-3 and r["max_abs_err"] < 1e-5 for r in course)


@pytest.mark.parametrize("framework", ["numpy", "torch", "jax"])
def test_skeleton_classes_load_the_weights_and_read_not_implemented(framework):
    """The stub's attribute names are the ones the checker loads weights into: a wrong name would
    fail in the loading, before the stub's NotImplementedError."""
    if framework == "torch":
        pytest.importorskip("torch")
    source = render("course-a", TITLE, get_group("course-a"), framework)
    namespace: dict = {}
    exec(compile(source, "<skeleton>", "exec"), namespace)
    for name in ("MultiHeadAttention", "PositionalEncoding"):
        report = check(name, namespace[name], framework=framework)
        assert {r["verdict"] for r in report.rows} == {"not implemented yet"}, str(report)


def test_class_calling_the_standalone_functions_fails_though_its_numbers_are_right(tmp_path):
    cheat = HEADER + QKV + CMA + '''
class MultiHeadAttention:
    def __init__(self, d_model, n_heads):
        self.n_heads = n_heads
    def __call__(self, query, key, value, mask=None):
        params = {"w_q": self.W_q, "b_q": self.b_q, "w_k": self.W_k, "b_k": self.b_k, "w_v": self.W_v, "b_v": self.b_v}
        q, k, v = get_multihead_qkv(query, params, self.n_heads, kv=key)
        out, w = calculate_multihead_attention(q, k, v, mask)
        B, H, T, D = out.shape
        return out.transpose(0, 2, 1, 3).reshape(B, T, H * D) @ self.W_o.T + self.b_o, w
'''
    path = tmp_path / "cheat.py"
    path.write_text(cheat)
    report = check_file(str(path), exercise_names=["MultiHeadAttention"])
    assert report.rows and not any(r["ok"] for r in report.rows)
    assert all("uses get_multihead_qkv" in r["message"] for r in report.rows), [r["message"] for r in report.rows]
    # ... while the same numbers, in process (no file to read), pass: the verdict is the static rule.
    namespace: dict = {}
    exec(compile(cheat, "<cheat>", "exec"), namespace)
    assert check("MultiHeadAttention", namespace["MultiHeadAttention"], framework="numpy").ok


def test_a_float32_table_is_not_a_mistake_but_a_float32_rounding_of_the_output_is():
    """Semantics.md: build the table in float64. A float32-built table (torch's default) drifts by
    ~pos * 3e-8 and must pass; the positional tolerance must still catch a wrong table."""
    ex = get("PositionalEncoding")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 128, 32))
    pos = np.arange(128, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, 32, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / 32))
    pe32 = np.zeros((128, 32), dtype=np.float32)
    pe32[:, 0::2], pe32[:, 1::2] = np.sin(pos * div), np.cos(pos * div)
    from triptych.common.tolerances import tolerance
    from triptych.crosscheck.grade import compare
    exact = x + np.array([[np.sin(p / 10000 ** (2 * (c // 2) / 32)) if c % 2 == 0 else
                           np.cos(p / 10000 ** (2 * (c // 2) / 32)) for c in range(32)] for p in range(128)])
    tol = tolerance("float64", ex.tol_kind)
    assert compare(x + pe32.astype(np.float64), exact, tol)[0]
    assert not compare(x + np.roll(pe32, 1, axis=0).astype(np.float64), exact, tol)[0]
