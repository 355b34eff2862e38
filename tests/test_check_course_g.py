"""Course G: a correct answers file passes, and every named mistake, written as the number a student
with that mistake would hand in, is named. The right numbers come from `calc` (a separate process)
and a torch model built here; the wrong ones are hand arithmetic, never the checker's own output."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from triptych.crosscheck import check
from triptych.crosscheck.exercises import get_group
from triptych.crosscheck.session import check_file

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS = Path(__file__).with_name("submissions")

L, H, h, T, r = 48, 6144, 48, 16384, 8
Z = [0.5, 0.1, 3.0, 0.2, 1.0]
P = math.exp(3.0) / sum(math.exp(z) for z in Z)
CE = -math.log(P)
SCORES = h * T * T * 2
FFN = L * (2 * 4 * H * H + 4 * H + H)
FFN_NO_BIAS = L * 2 * 4 * H * H
LORA = L * 2 * r * 2 * H
N, d = 4, 512
G3 = 32000 * d + 258 * d + 2 * d + N * (4 * (d * d + d) + 2 * (d * d + d) + 4 * d)

# (exercise, mistake) -> the number a student with that mistake writes
PLANTED = {
    ("G1_P_MAT", "p_without_exp"): 3.0 / sum(Z),
    ("G1_P_MAT", "p_sigmoid"): 1 / (1 + math.exp(-3.0)),
    ("G1_CE_LOSS", "loss_in_bits"): -math.log2(P),
    ("G1_CE_LOSS", "loss_log10"): -math.log10(P),
    ("G1_CE_LOSS", "loss_without_exp"): -math.log(3.0 / sum(Z)),
    ("G2C_SCORES_BYTES", "fp32_scores"): h * T * T * 4,
    ("G2C_SCORES_BYTES", "one_head"): T * T * 2,
    ("G2C_SCORES_BYTES", "all_layers"): L * SCORES,
    ("G2C_SCORES_BYTES", "causal_half"): h * T * (T + 1) // 2 * 2,
    ("G2C_SCORES_GB", "gb_is_gib"): SCORES / 2**30,
    ("G2C_SCORES_GB", "fp32_scores_gb"): 2 * SCORES / 1e9,
    ("G2C_SCORES_GIB", "gib_is_gb"): SCORES / 1e9,
    ("G2D_FFN_PARAMS", "forgot_biases"): FFN_NO_BIAS,
    ("G2D_FFN_PARAMS", "ffn_one_layer"): FFN // L,
    ("G2E_LORA_PARAMS", "lora_per_layer"): L * r * 2 * H,
    ("G2E_LORA_PARAMS", "lora_one_layer"): LORA // L,
    ("G2E_LORA_PARAMS", "lora_all_four"): 2 * LORA,
    ("G2E_LORA_ADAM_BYTES", "one_adam_state"): 4 * LORA,
    ("G2E_LORA_ADAM_BYTES", "adam_plus_weights_grads"): 16 * LORA,
    ("G2E_ADAM_RATIO", "ratio_inverted"): FFN / LORA,
    ("G2E_ADAM_RATIO", "ratio_percent"): 100 * LORA / FFN,
    ("G2E_ADAM_RATIO", "forgot_biases"): LORA / FFN_NO_BIAS,
    ("G2E_ADAM_RATIO", "one_adam_state"): 4 * LORA / (8 * FFN),
    **{(ex, m): v for ex in ("G3_PARAMS", "G3_PARAMS_TORCH") for m, v in {
        "forgot_biases": G3 - N * (4 * d + d + d),
        "layernorm_weight_only": G3 - (2 * N + 1) * d,
        "positions_256": G3 - 2 * d,
        "ffn_4d": G3 + N * (2 * (d * 4 * d - d * d) + 3 * d),
        "roberta_token_type": G3 + d,
    }.items()},
}


def _calc(scenario: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "calc", scenario, "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_every_course_g_variant_has_a_planted_number():
    names = {(ex.name, v.name) for ex in get_group("course-g") for v in ex.variants}
    assert names == set(PLANTED)


@pytest.mark.parametrize("exercise,mistake", sorted(PLANTED))
def test_planted_mistake_is_named(exercise, mistake):
    report = check(exercise, PLANTED[(exercise, mistake)], framework="numpy")
    assert not report.ok
    assert report.mistakes == {mistake}, str(report)


def test_hand_rounded_none_and_text_answers():
    # right to 4 digits: named "rounded"; the skeleton's None: not implemented yet; text: wrong type
    assert check("G2C_SCORES_GB", 25.77, framework="numpy").mistakes == {"rounded"}
    assert check("G2D_FFN_PARAMS", None, framework="numpy").rows[0]["verdict"] == "not implemented yet"
    assert check("G1_P_MAT", "0.75", framework="numpy").rows[0]["verdict"] == "wrong return type"
    # a mistake AND rounding: forgotten biases written as 14.4955e9
    assert check("G2D_FFN_PARAMS", 14.4955e9, framework="numpy").mistakes == {"forgot_biases"}


def test_the_answers_file_agrees_with_calc_and_with_torch():
    """The sample file's numbers are the ones `calc` prints and a torch model has, so its passing
    check below is a check of the checker."""
    import torch.nn as nn

    ns: dict = {}
    exec((SUBMISSIONS / "course_g_answers.py").read_text(), ns)
    mlm, aether = _calc("mlm-toy"), _calc("aether")
    assert ns["G1_P_MAT"] == pytest.approx(mlm["p_target"], rel=1e-12)
    assert ns["G1_CE_LOSS"] == pytest.approx(mlm["cross_entropy"], rel=1e-12)
    assert ns["G2C_SCORES_BYTES"] == aether["attention_scores_bytes"]
    assert ns["G2C_SCORES_GB"] == aether["details"]["attention_scores_bytes"]["GB"]
    assert ns["G2C_SCORES_GIB"] == aether["details"]["attention_scores_bytes"]["GiB"] == 24.0
    assert ns["G2D_FFN_PARAMS"] == aether["ffn_params"]
    assert ns["G2E_LORA_PARAMS"] == aether["lora_params"]
    assert ns["G2E_LORA_ADAM_BYTES"] == aether["lora_adam_bytes"]
    assert ns["G2E_ADAM_RATIO"] == pytest.approx(aether["lora_to_ffn_adam_ratio"], rel=1e-12)
    # G.3 by instantiating torch's own layers (on the meta device: shapes, no memory)
    model = nn.ModuleList([nn.Embedding(32000, d, device="meta"), nn.Embedding(258, d, device="meta"),
                           nn.LayerNorm(d, device="meta")]
                          + [nn.TransformerEncoderLayer(d, 8, dim_feedforward=d, device="meta") for _ in range(N)])
    assert ns["G3_PARAMS"] == ns["G3_PARAMS_TORCH"] == sum(p.numel() for p in model.parameters()) == G3


def test_correct_answers_file_passes_in_the_sandbox():
    report = check_file(str(SUBMISSIONS / "course_g_answers.py"))
    assert len(report.rows) == len(get_group("course-g"))
    assert report.ok, [(r["exercise"], r["message"]) for r in report.rows if not r["ok"]]


def test_mistaken_answers_file_names_each_mistake():
    report = check_file(str(SUBMISSIONS / "course_g_mistakes.py"))
    named = {r["exercise"]: r.get("mistake") or r["verdict"] for r in report.rows}
    assert named == {
        "G1_P_MAT": "rounded", "G1_CE_LOSS": "loss_in_bits", "G2C_SCORES_BYTES": "not implemented yet",
        "G2C_SCORES_GB": "gb_is_gib", "G2C_SCORES_GIB": "pass", "G2D_FFN_PARAMS": "forgot_biases",
        "G2E_LORA_PARAMS": "lora_per_layer", "G2E_LORA_ADAM_BYTES": "one_adam_state",
        "G2E_ADAM_RATIO": "wrong return type", "G3_PARAMS": "layernorm_weight_only",
        "G3_PARAMS_TORCH": "ffn_4d",
    }, named
    assert not report.ok
