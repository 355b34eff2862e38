"""`check` on real-style code: CS336 assignment-1 repositories and notebook exports, as people hand them in.

The corpus (tests/submissions/cs336/<student>/ and tests/submissions/notebooks/) was written for these tests
in the forms public submissions take: a package cs336_basics with relative imports and the stock
`importlib.metadata` __init__, tests/adapters.py with the handout's signatures filled in by calling the
package (load_state_dict, `.data =`), einops / einx / jaxtyping; notebook exports with `# In[3]:` markers,
`get_ipython()` lines, `DEVICE = "cuda" if ... else "cpu"` used inside the functions, prints of names from
deleted cells, and a real .ipynb with `!pip` and `%matplotlib` cells.

What is held: zero FAIL (every row ok) on every correct submission; on every buggy one, each failing row of
the exercise that carries the mistake names it (row["mistake"]); the conventions and precision notes by
name. CI time: two correct repositories run end to end (one through the CLI in a subprocess, cwd = the
repository, exactly as a student types it; one as a folder through the API), the others restricted to the
exercises that carry their mistakes; every run once, in a module-scoped fixture.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from triptych.crosscheck.session import check_file, check_path

ROOT = Path(__file__).resolve().parents[1]
CS336 = ROOT / "tests" / "submissions" / "cs336"
NOTEBOOKS = ROOT / "tests" / "submissions" / "notebooks"

# Verdicts a correct submission may get: pass (with or without a note), a case its signature cannot
# take, an adapter the student has not written yet.
OK_VERDICTS = {"pass", "not graded", "not implemented yet"}

# student -> {exercise: the mistake their code makes there}. Each repository keeps its mistakes in
# separate components, so every failing row of an exercise has exactly one cause.
BUGGY = {
    # dave's language model is built from his post-norm block: the LM fails with the block's mistake
    "dave": {"run_transformer_block": "cs336_block_post_norm", "run_transformer_lm": "cs336_block_post_norm",
             "run_gradient_clipping": "cs336_clip_per_tensor"},
    "erin": {"run_rope": "cs336_rope_half_layout", "run_get_batch": "cs336_get_batch_misses_last_window"},
    "frank": {"run_rmsnorm": "cs336_rmsnorm_eps_outside_sqrt", "run_swiglu": "cs336_swiglu_gate_up_swapped"},
    "grace": {"run_scaled_dot_product_attention": "cs336_sdpa_mask_inverted",
              "get_tokenizer": "cs336_tokenizer_special_split"},
    "heidi": {"get_tokenizer": "cs336_tokenizer_merges_by_frequency",
              "run_get_lr_cosine_schedule": "cs336_cosine_no_floor"},
    "ivan": {"run_train_bpe": "cs336_bpe_other_tie_rule", "get_adamw_cls": "cs336_adamw_no_bias_correction"},
}
# carol is correct too; graded on the adapters where her forms differ from alice's and bob's (einx,
# load_state_dict into modules made in the input's dtype, complex-number RoPE, the handout's decay order
# with torch's epsilon).
CAROL = ["run_linear", "run_rmsnorm", "run_rope", "run_multihead_self_attention_with_rope",
         "run_transformer_lm", "get_adamw_cls", "run_gradient_clipping", "run_get_batch"]


def _bad(rows: list[dict]) -> list[str]:
    """Rows a correct submission must not have. "not implemented yet" is not ok (the work is not done)
    but is no verdict on the code either."""
    return [f"{r['exercise']} / {r['case']}: {r['verdict']} {r.get('mistake') or ''} {r['message']}"
            for r in rows if r["verdict"] not in OK_VERDICTS or (not r["ok"] and r["verdict"] != "not implemented yet")]


def _by_exercise(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if r["exercise"] == name]


# ---------------------------------------------------------------- the runs (each once)

@pytest.fixture(scope="module")
def alice_cli():
    """`triptych check tests/adapters.py --json` typed in alice's repository: (rows, exit code, seconds)."""
    repo = CS336 / "alice"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "check", "tests/adapters.py", "--json"],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert proc.stdout.strip(), proc.stderr[-2000:]
    return json.loads(proc.stdout), proc.returncode, seconds


@pytest.fixture(scope="module")
def bob_folder():
    """bob's repository as one submission: `check <repo>`."""
    reports = check_path(str(CS336 / "bob"))
    assert len(reports) == 1, [r.path for r in reports]
    return reports[0]


@pytest.fixture(scope="module")
def carol_report():
    return check_file(str(CS336 / "carol" / "tests" / "adapters.py"), exercise_names=CAROL)


@pytest.fixture(scope="module")
def judy_report():
    """judy has written the training helpers only, nanoGPT style."""
    return check_file(str(CS336 / "judy" / "tests" / "adapters.py"),
                      exercise_names=["run_silu", "run_cross_entropy", "run_get_lr_cosine_schedule"])


@pytest.fixture(scope="module")
def buggy_reports():
    return {who: check_file(str(CS336 / who / "tests" / "adapters.py"), exercise_names=sorted(mistakes))
            for who, mistakes in BUGGY.items()}


@pytest.fixture(scope="module")
def notebooks():
    """The notebooks folder as a class's hand-ins: `check DIR`, one report per file."""
    reports = check_path(str(NOTEBOOKS))
    by_name = {Path(r.path).name: r for r in reports}
    assert sorted(by_name) == sorted(p.name for p in NOTEBOOKS.iterdir() if p.suffix in (".py", ".ipynb"))
    return by_name


# ---------------------------------------------------------------- correct repositories: zero FAIL

def test_alice_full_adapters_through_the_cli_pass(alice_cli):
    rows, code, _ = alice_cli
    cs336 = {r["exercise"] for r in rows if r["group"] == "cs336"}
    # every adapter alice filled in is graded (checkpointing has no exercise)
    assert cs336 >= {"run_linear", "run_embedding", "run_swiglu", "run_scaled_dot_product_attention",
                     "run_multihead_self_attention", "run_multihead_self_attention_with_rope", "run_rope",
                     "run_transformer_block", "run_transformer_lm", "run_rmsnorm", "run_silu", "run_get_batch",
                     "run_softmax", "run_cross_entropy", "run_gradient_clipping", "get_adamw_cls",
                     "run_get_lr_cosine_schedule", "get_tokenizer", "run_train_bpe"}
    assert not _bad(rows), "\n".join(_bad(rows))
    assert code == 0


def test_alice_handout_adamw_is_named_as_the_handout_convention(alice_cli):
    rows = _by_exercise(alice_cli[0], "get_adamw_cls")
    named = " ".join(r.get("convention") or "" for r in rows)
    assert "adamw_decay_after" in named and "adamw_efficient_eps" in named, [r.get("convention") for r in rows]
    assert all(r["note"] for r in rows if r.get("convention"))


def test_bob_folder_is_one_submission_and_passes(bob_folder):
    rows = bob_folder.rows
    assert not _bad(rows), "\n".join(_bad(rows))
    # bob left the tokenizer and the BPE trainer for later
    for name in ("get_tokenizer", "run_train_bpe"):
        assert {r["verdict"] for r in _by_exercise(rows, name)} == {"not implemented yet"}
    # torch's own AdamW order (decay first, epsilon inside the bias correction) is the reference: no note
    assert not [r["convention"] for r in _by_exercise(rows, "get_adamw_cls") if r.get("convention")]


def test_carol_passes_with_decay_after_named(carol_report):
    rows = carol_report.rows
    assert {r["exercise"] for r in rows} == set(CAROL)
    assert not _bad(rows), "\n".join(_bad(rows))
    named = [r["convention"] for r in _by_exercise(rows, "get_adamw_cls") if r.get("convention")]
    # the handout's decay order, but torch's epsilon (inside the bias correction)
    assert named and all("adamw_decay_after" in c and "adamw_efficient_eps" not in c for c in named), named


def test_judy_warmup_counting_from_one_is_a_convention(judy_report):
    rows = judy_report.rows
    assert not _bad(rows), "\n".join(_bad(rows))
    schedule = _by_exercise(rows, "run_get_lr_cosine_schedule")
    assert schedule and all(r.get("convention") == "cosine_warmup_plus_one" and r["note"] for r in schedule), \
        [(r["case"], r.get("convention")) for r in schedule]


# ---------------------------------------------------------------- buggy repositories: the mistake named

@pytest.mark.parametrize("who", sorted(BUGGY))
def test_buggy_repository_mistakes_are_named(buggy_reports, who):
    rows = buggy_reports[who].rows
    for exercise, mistake in BUGGY[who].items():
        mine = _by_exercise(rows, exercise)
        failed = [r for r in mine if not r["ok"]]
        assert failed, f"{who}: {exercise} passes every case: {[r['verdict'] for r in mine]}"
        unnamed = [f"{r['case']}: {r['verdict']} mistake={r.get('mistake')} {r['message']}"
                   for r in failed if r.get("mistake") != mistake]
        assert not unnamed, f"{who}: {exercise} should name {mistake}:\n" + "\n".join(unnamed)
        assert all(r["verdict"] == "FAIL" for r in failed)


def test_end_to_end_failure_says_fix_the_part_first(buggy_reports):
    """The LM fails because the block it is built from fails (both through the package's classes, not
    through one adapter calling the other): the LM's rows say to fix run_transformer_block first."""
    lm = [r for r in _by_exercise(buggy_reports["dave"].rows, "run_transformer_lm") if not r["ok"]]
    assert lm and all("run_transformer_block" in (r.get("fix_first") or []) for r in lm), \
        [(r["case"], r.get("fix_first"), r["message"]) for r in lm]


def test_buggy_repository_as_a_folder(buggy_reports):
    """`check <repo>` grades the repository through its adapters.py: the same rows as the file."""
    folder = check_path(str(CS336 / "frank"), exercise_names=["run_swiglu"])[0]
    by_file = _by_exercise(buggy_reports["frank"].rows, "run_swiglu")
    assert [(r["case"], r["verdict"], r.get("mistake")) for r in folder.rows] == \
        [(r["case"], r["verdict"], r.get("mistake")) for r in by_file]


# ---------------------------------------------------------------- notebook exports

def test_torch_export_with_device_and_dead_cells_passes(notebooks):
    report = notebooks["attention_steps_torch.py"]
    rows = report.rows
    assert not _bad(rows), "\n".join(_bad(rows))
    assert {r["exercise"] for r in rows} >= {"attn_scaled", "self_attention", "apply_causal_mask"}
    # torch.sqrt(torch.tensor(d_head)) is a float32 scalar: the course's own test (1e-4) passes, not within
    # ours; the row says why
    course = [r for r in _by_exercise(rows, "self_attention") if r["course_tol"] is not None]
    assert course and all(r["note"] for r in course), [(r["case"], r["note"]) for r in course]
    float64 = [r for r in _by_exercise(rows, "attn_scaled") if r["dtype"] == "float64" and r["course_tol"] is None]
    assert float64 and all(r.get("precision") for r in float64), [(r["case"], r.get("precision")) for r in float64]
    # the print of names from a deleted cell and the get_ipython() lines are skipped, and said so
    assert any("skipped" in n or "get_ipython" in n for n in report.notes), report.notes


def test_numpy_export_float32_habits_pass_with_notes(notebooks):
    rows = notebooks["attention_steps_numpy.py"].rows
    assert not _bad(rows), "\n".join(_bad(rows))
    # A / np.sqrt(n_embd / n_heads) on float32 input: NumPy 2 promotes to float64; a note, not "wrong dtype"
    f32 = [r for r in _by_exercise(rows, "attn_scaled") if r["dtype"] == "float32"]
    assert f32 and all(r["note"] and r.get("precision") for r in f32), [(r["case"], r["note"]) for r in f32]
    # RoPE tables built in float32 on float64 input
    rope64 = [r for r in _by_exercise(rows, "apply_rope") if r["dtype"] == "float64"]
    assert rope64 and all(r.get("precision") == "rope_float32_tables" for r in rope64), \
        [(r["case"], r.get("precision")) for r in rope64]


def test_finite_mask_fill_is_a_convention(notebooks):
    report = notebooks["attention_finite_fill.py"]
    assert not _bad(report.rows), "\n".join(_bad(report.rows))
    fill = _by_exercise(report.rows, "apply_causal_mask")
    assert fill and all(r.get("convention") == "mask_finite_fill" for r in fill), [r.get("convention") for r in fill]
    # a %%time cell and an assert on names from other cells are skipped, and the report lists them
    assert any("run_cell_magic" in n and "Q_test" in n for n in report.notes), report.notes


def test_ipynb_in_cs336_form(notebooks):
    rows = notebooks["cs336_blocks.ipynb"].rows
    # softmax(x, dim) is called with dim; the SDPA takes no scale and returns only the output
    assert {r["verdict"] for r in _by_exercise(rows, "softmax")} == {"pass"}
    sdpa = _by_exercise(rows, "scaled_dot_product_attention")
    assert [r["case"] for r in sdpa if r["verdict"] == "not graded"] == ["scale=0.5 given"]
    # Fully masked rows: this exercise's contract gives zeros, a -inf fill gives NaN. Either a pass naming
    # the convention or a FAIL naming exactly that, never an unnamed failure.
    for r in sdpa:
        if not r["ok"]:
            assert r.get("mistake") == "sdpa_masked_rows_nan", r
        elif r["verdict"] == "pass" and r.get("convention"):
            assert "masked_rows_nan" in r["convention"], r
    # cross_entropy(inputs, targets) takes no ignore_index: the case with ignored positions cannot be
    # asked of it ("not graded"), the others are graded
    ce = {r["case"]: r["verdict"] for r in _by_exercise(rows, "cross_entropy")}
    assert ce == {"8 positions, vocab 5": "pass", "16 positions, 3 ignored (float32)": "not graded"}, ce
    others = [r for r in rows if r["exercise"] != "scaled_dot_product_attention"]
    assert not _bad(others), "\n".join(_bad(others))
    named = [r.get("convention") or "" for r in _by_exercise(rows, "adamw_step")]
    assert all("adamw_decay_after" in c for c in named), named
    assert any("adamw_efficient_eps" in c for c in named), named


def test_buggy_export_names_nan_mistakes(notebooks):
    rows = notebooks["attention_buggy.py"].rows
    soft = [r for r in _by_exercise(rows, "softmax") if not r["ok"]]
    assert soft and all(r.get("mistake") == "softmax_no_max_shift" for r in soft), soft
    # an inverted mask leaves NaN in rows with nothing to attend to: named, not "NaN where finite"
    sdpa = [r for r in _by_exercise(rows, "scaled_dot_product_attention") if not r["ok"]]
    assert sdpa and all(r.get("mistake") == "sdpa_mask_inverted" for r in sdpa), \
        [(r["case"], r["verdict"], r.get("mistake")) for r in sdpa]
