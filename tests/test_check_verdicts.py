"""Verdicts on code written the way people write it: a legitimate form (a convention, float32 somewhere,
the course's own pass mark) passes with a note that names it; a real mistake in real form is named.

The submissions are written here as files and graded through the sandbox (crosscheck.session.check_file)
or in process (crosscheck.api.check). Each claim is checked against an independent computation in
this file (torch.optim.AdamW, torch's softmax and F.scaled_dot_product_attention, a complex-number
rotation), never against numbers copied from the checker's output.
"""
from __future__ import annotations

import importlib.util
import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from triptych.common.tolerances import tolerance
from triptych.crosscheck import check
from triptych.crosscheck.exercises import get
from triptych.crosscheck.grade import order_failures
from triptych.crosscheck.session import check_file

# NumPy: the CS336 handout's AdamW, a course-B step or three, and a softmax with the wrong axis that
# an SDPA then uses (to see which part is named first).
NUMPY_FILE = '''
import math
import numpy as np


def adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    """Algorithm 1 of the handout: moments, lr_t with both corrections, the step, then the decay."""
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g ** 2
    alpha_t = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    p = p - alpha_t * m / (np.sqrt(v) + eps)
    p = p - lr * weight_decay * p
    return p, m, v


def attn_scaled(A, n_embd, n_heads):
    return A / np.sqrt(n_embd / n_heads)


def make_causal_mask(n_tok):
    return np.tril(np.ones((n_tok, n_tok)))


def apply_causal_mask(mask, A):
    return np.where(mask == 0, -1e9, A)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = np.where(mask, s, -1e9)
    w = softmax(s)
    return w @ v, w
'''

# torch: RoPE tables in float32 (the usual inv_freq buffer), an SDPA whose bool mask is read as
# True = masked, course B's self_attention and a GELU each with a float32 torch scalar.
TORCH_FILE = '''
import math

import torch


def apply_rope(x, positions=None, base=10000.0, layout="half"):
    T, D = x.shape[-2:]
    if positions is None:
        positions = torch.arange(T)
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2).float() / D))
    angles = positions.float()[..., None] * inv_freq
    if angles.ndim == 3:  # one offset per sequence: (B, T, D/2) -> (B, 1, T, D/2)
        angles = angles[:, None]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    if layout == "half":
        a, b = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else d_k ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def self_attention(Q, K, V, n_heads=1, causal=True):
    B, T, C = Q.shape
    hs = C // n_heads
    q, k, v = (t.view(B, T, n_heads, hs).transpose(1, 2) for t in (Q, K, V))
    att = (q @ k.transpose(-2, -1)) / torch.sqrt(torch.tensor(hs))
    if causal:
        att = att.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))
    y = torch.softmax(att, dim=-1) @ v
    return y.transpose(1, 2).reshape(B, T, C)


def gelu(x):
    c = torch.tensor(math.sqrt(2.0 / math.pi))  # torch's default dtype: float32
    return 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * x ** 3)))
'''


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _inputs(name, case_index):
    case = get(name).cases[case_index]
    return case, case.inputs(np.random.default_rng(case.seed), np.dtype(case.dtype))


def _rows(report, exercise):
    return [r for r in report.rows if r["exercise"] == exercise]


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("verdicts") / "homework.py"
    path.write_text(NUMPY_FILE)
    return path, check_file(str(path))


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("verdicts") / "model.py"
    path.write_text(TORCH_FILE)
    return path, check_file(str(path))


def _torch_adamw(i):
    p = torch.nn.Parameter(torch.from_numpy(i["p"].copy()))
    opt = torch.optim.AdamW([p], lr=i["lr"], betas=tuple(i["betas"]), eps=i["eps"], weight_decay=i["weight_decay"])
    opt.state[p] = {"step": torch.tensor(float(i["step"] - 1)), "exp_avg": torch.from_numpy(i["m"].copy()),
                    "exp_avg_sq": torch.from_numpy(i["v"].copy())}
    p.grad = torch.from_numpy(i["g"].copy())
    opt.step()
    return p.detach().numpy()


def test_the_handout_adamw_passes_with_its_conventions_named(numpy_run):
    path, report = numpy_run
    rows = _rows(report, "adamw_step")
    assert rows and all(r["ok"] and r["verdict"] == "pass" for r in rows), [r["message"] for r in rows]
    assert all(r["convention"] and "adamw_decay_after" in r["convention"] for r in rows)
    assert all("weight decay" in r["note"] and "after the Adam step" in r["note"] for r in rows)
    # float64: the efficient eps is told apart from torch's too; float32 cannot see it
    assert rows[0]["convention"] == "adamw_decay_after+adamw_efficient_eps"
    user = _load(path)
    for n, row in enumerate(rows):
        case, i = _inputs("adamw_step", n)
        mine = user.adamw_step(i["p"], i["g"], i["m"], i["v"], i["step"], i["lr"], tuple(i["betas"]), i["eps"],
                               i["weight_decay"])[0]
        err = float(np.max(np.abs(mine.astype(np.float64) - _torch_adamw(i))))
        assert row["max_abs_err"] == pytest.approx(err, rel=1e-6)
        assert err > row["tolerance"]  # not torch's AdamW to the case's tolerance: the note is needed


def test_numpy2_promotion_passes_with_the_note_that_says_how_to_keep_float32(numpy_run):
    _, report = numpy_run
    assert (np.ones(2, np.float32) / np.sqrt(8 / 2)).dtype == np.float64  # NumPy 2 (NEP 50) does promote
    rows = _rows(report, "attn_scaled")
    f32 = [r for r in rows if r["dtype"] == "float32"]
    assert f32 and all(r["ok"] and r["precision"] == "numpy2_promotion" for r in f32)
    assert "NumPy 2 promotes" in f32[0]["note"] and "math.sqrt" in f32[0]["note"]
    assert all(r["ok"] and not r["note"] for r in rows if r["dtype"] == "float64")


def test_a_minus_1e9_fill_passes_as_mask_finite_fill(numpy_run):
    path, report = numpy_run
    masks = _rows(report, "make_causal_mask")
    assert all(r["ok"] and r["convention"] == "mask_float_ones" for r in masks)
    rows = _rows(report, "apply_causal_mask")
    assert rows and all(r["ok"] and r["convention"] == "mask_finite_fill" for r in rows), rows
    user = _load(path)
    for n, _ in enumerate(rows):  # the softmax the next step takes is torch's on -inf scores
        _, i = _inputs("apply_causal_mask", n)
        mine = user.apply_causal_mask(user.make_causal_mask(i["n_tok"]), i["A"])
        a = torch.from_numpy(i["A"])
        ref = torch.softmax(a.masked_fill(~torch.ones(i["n_tok"], i["n_tok"], dtype=torch.bool).tril(), float("-inf")), -1)
        assert np.max(np.abs(torch.softmax(torch.from_numpy(mine), -1).numpy() - ref.numpy())) < 1e-15


def _before_ordering(rows):
    """The rows as judged, before check_file's own order_failures added its advice."""
    return [dict(r, message=(r["message"] or "").split("; fix `")[0], fix_first=None) for r in rows]


def test_the_failing_part_is_named_first(numpy_run):
    path, report = numpy_run
    assert any("fix `softmax` first" in r["message"] for r in report.rows)  # check_file says it itself
    rows = order_failures(_before_ordering(report.rows), path.read_text())
    softmax_rows = [r for r in rows if r["exercise"] == "softmax"]
    assert softmax_rows and not any(r["ok"] for r in softmax_rows)
    e2e = [r for r in rows if r["exercise"] == "scaled_dot_product_attention" and not r["ok"]]
    assert e2e and all("fix `softmax` first" in r["message"] and "scaled_dot_product_attention uses it" in r["message"]
                       for r in e2e)
    # without the use in the file's code there is nothing to say
    unrelated = order_failures(_before_ordering(report.rows), path.read_text().replace("w = softmax(s)", "w = s"))
    assert not any("first" in r["message"] for r in unrelated if r["exercise"] == "scaled_dot_product_attention")


def test_report_marks_passes_with_a_note(numpy_run):
    from rich.console import Console

    from triptych.crosscheck.report import json_rows, print_file_report
    _, report = numpy_run
    console = Console(record=True, width=220)
    print_file_report(console, report, verbose=True)  # every table, every note
    text = console.export_text()
    noted = sum(r["ok"] and bool(r.get("note")) for r in report.rows)
    assert "pass*" in text and f"({noted} with a note)" in text
    adamw_note = _rows(report, "adamw_step")[0]["note"]
    assert text.count(adamw_note[:60]) == 1  # once per distinct note
    assert all({"note", "convention", "precision"} <= set(r) for r in json_rows(report))


def _rope_complex(x, positions, base, layout):
    """Each channel pair as a complex number times e^{i pos theta}, in float64 (torch)."""
    x = torch.from_numpy(x)
    T, D = x.shape[-2:]
    pos = torch.arange(T, dtype=torch.float64) if positions is None else torch.as_tensor(positions, dtype=torch.float64)
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = pos[..., None] * theta
    if ang.ndim == 3:
        ang = ang[:, None]
    rot = torch.polar(torch.ones_like(ang), ang)
    if layout == "half":
        z = torch.complex(x[..., : D // 2], x[..., D // 2:]) * rot
        return torch.cat([z.real, z.imag], -1).numpy()
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], D // 2, 2).contiguous()) * rot
    return torch.view_as_real(z).reshape(x.shape).numpy()


def test_float32_rope_tables_on_float64_pass_with_the_precision_note(torch_run):
    path, report = torch_run
    rows = _rows(report, "apply_rope")
    assert rows and all(r["ok"] for r in rows), [r["message"] for r in rows]
    f64 = [r for r in rows if r["dtype"] == "float64"]
    assert f64 and all(r["precision"] == "rope_float32_tables" and "float32" in r["note"] for r in f64)
    user = _load(path)
    case, i = _inputs("apply_rope", 1)  # positions 10..15
    pos = None if i["positions"] is None else torch.as_tensor(i["positions"])
    mine = user.apply_rope(torch.from_numpy(i["x"]), pos, i["base"], i["layout"]).numpy()
    err = float(np.max(np.abs(mine - _rope_complex(i["x"], i["positions"], i["base"], i["layout"]))))
    assert tolerance("float64").atol < err < tolerance("float32").atol  # float32's error, not a wrong rotation


def test_an_inverted_bool_mask_is_named_though_it_leaves_nan(torch_run):
    path, report = torch_run
    rows = _rows(report, "scaled_dot_product_attention")
    masked = [r for r in rows if "causal" in r["case"]]
    assert masked and all(not r["ok"] and r["mistake"] == "sdpa_mask_inverted" for r in masked), masked
    assert all(r["ok"] for r in rows if r not in masked)  # `out` alone is accepted
    user = _load(path)
    _, i = _inputs("scaled_dot_product_attention", 2)  # causal + padding: fully masked rows either way
    q, k, v, mask = (torch.from_numpy(np.asarray(i[n])) for n in ("q", "k", "v", "mask"))
    mine = user.scaled_dot_product_attention(q, k, v, mask).numpy()
    nan_rows = np.isnan(mine).any(-1)
    assert nan_rows.any()  # the real form leaves NaN where the inverted mask blocks every key
    inverted = F.scaled_dot_product_attention(q, k, v, attn_mask=~mask).numpy()
    assert np.max(np.abs(mine[~nan_rows] - inverted[~nan_rows])) < 1e-5


def test_the_course_tolerance_wins_with_our_figure_beside_it(torch_run):
    path, report = torch_run
    rows = _rows(report, "self_attention")
    assert rows and all(r["ok"] for r in rows), [r["message"] for r in rows]
    course = [r for r in rows if r["course_tol"] is not None]
    assert course and all(r["verdict"] == "pass" and "within the course's own tolerance 0.0001" in r["note"]
                          for r in course)
    user = _load(path)
    case, i = _inputs("self_attention", 2)  # the course's test: 3 heads, causal
    q, k, v = (torch.from_numpy(i[n]) for n in ("Q", "K", "V"))
    mine = user.self_attention(q, k, v, i["n_heads"], i["causal"])
    split = [t.view(1, 10, 3, 2).transpose(1, 2) for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*split, is_causal=True).transpose(1, 2).reshape(1, 10, 6)
    err = float((mine - ref).abs().max())
    assert tolerance("float64").atol < err <= case.course_tol


def test_float32_entering_float64_code_passes_against_the_float32_reference(torch_run):
    path, report = torch_run
    rows = _rows(report, "gelu")
    f64 = [r for r in rows if r["dtype"] == "float64"]
    assert f64 and all(r["ok"] and r["precision"] == "float32_arithmetic" for r in f64), f64
    assert "float32 entered somewhere" in f64[0]["note"]
    assert all(r["ok"] and not r["note"] for r in rows if r["dtype"] == "float32")
    user = _load(path)
    _, i = _inputs("gelu", 0)
    x = torch.from_numpy(i["x"])
    err = float((user.gelu(x) - F.gelu(x, approximate="tanh")).abs().max())
    assert tolerance("float64").atol < err < tolerance("float32").atol


def _handout_adamw(bias_correction=True, l2=False):
    def adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        b1, b2 = betas
        if l2:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step) if bias_correction else lr
        p = p - lr_t * m / (np.sqrt(v) + eps)
        return (p if l2 else p - lr * weight_decay * p), m, v
    return adamw_step


@pytest.mark.parametrize("knobs,mistake", [(dict(bias_correction=False), "adamw_no_bias_correction"),
                                           (dict(l2=True), "adamw_l2_in_gradient")])
def test_handout_style_adamw_mistakes_are_still_named(knobs, mistake):
    report = check("adamw_step", _handout_adamw(**knobs), framework="numpy")
    assert not report.ok and report.mistakes == {mistake}, str(report)


def test_a_mistake_made_with_float32_tables_is_still_named(tmp_path):
    source = TORCH_FILE.split("def scaled_dot_product_attention")[0].replace('layout == "half"', 'layout != "half"')
    path = tmp_path / "rope_swapped.py"
    path.write_text(textwrap.dedent(source))
    report = check("apply_rope", _load(path), framework="torch")
    assert not report.ok and report.mistakes == {"rope_wrong_pairing"}, str(report)


def test_float64_input_answered_in_float32_passes_with_the_note_that_precision_was_dropped():
    def gelu(x):
        x = x.float()  # the whole computation in torch's default dtype
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    report = check("gelu", gelu, framework="torch")
    f64 = [r for r in report.rows if r["dtype"] == "float64"]
    assert report.ok and f64 and all(r["precision"] == "float32_output" and "float32" in r["note"] for r in f64)
    _, i = _inputs("gelu", 0)
    x = torch.from_numpy(i["x"])
    err = float((gelu(x).double() - F.gelu(x, approximate="tanh")).abs().max())
    assert tolerance("float64").atol < err < tolerance("float32").atol


def test_fix_first_through_the_users_own_package():
    """An adapters file whose functions each call the student's package: the part may be reached
    through it, so it is named; a file whose end-to-end function calls only NumPy does not use it."""
    rows = [{"exercise": "run_transformer_block", "group": "cs336", "ok": False, "verdict": "FAIL", "message": "m"},
            {"exercise": "run_transformer_lm", "group": "cs336", "ok": False, "verdict": "FAIL", "message": "m"}]
    adapters = textwrap.dedent('''
        from cs336_basics.model import TransformerBlock, TransformerLM

        def run_transformer_block(d_model, num_heads, d_ff, max_seq_len, theta, weights, in_features):
            return TransformerBlock(d_model, num_heads, d_ff, max_seq_len, theta)(in_features)

        def run_transformer_lm(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta,
                               weights, in_indices):
            return TransformerLM(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta)(in_indices)
        ''')
    named = order_failures([dict(r) for r in rows], adapters)
    assert named[1]["fix_first"] == ["run_transformer_block"] and "fix `run_transformer_block` first" in named[1]["message"]
    assert not named[0].get("fix_first")
    alone = adapters.replace("from cs336_basics.model import TransformerBlock, TransformerLM", "import numpy as np")
    assert not order_failures([dict(r) for r in rows], alone)[1].get("fix_first")
