"""Course G (exercises.md G.1-G.3): the accounting answers, written by hand as named numbers.

The student hands in a .py file of module-level constants, one per answer (an expression is fine:
`G2C_SCORES_BYTES = 48 * 16384**2 * 2`); `triptych exercise new course-g` writes one with every name.
Each answer is compared with the accounting calculators (the numbers `triptych calc aether`,
`calc encoder-course`, `calc mlm-toy` print), with the "count" row of triptych/common/tolerances.py (1e-9
relative). A wrong number is matched against the same calculators run with one mistake: GB for GiB,
the biases forgotten, one Adam state instead of two, LoRA counted once per layer instead of once per
adapted matrix, ... A number right to three or more digits but rounded by hand is named as such.
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np

from triptych.calculators import GB, GiB, attention_scores_bytes, count_parameters, lora_params, optimizer_state_bytes
from triptych.calculators.scenarios import (AETHER, AETHER_ADAM_BYTES_PER_STATE, AETHER_BYTES_PER_SCORE, AETHER_LORA_RANK,
                                  AETHER_LORA_TARGETS, ENCODER_COURSE, MLM_TOY_LOGITS, MLM_TOY_TARGET)
from triptych.calculators.loss import target_probability_and_loss
from triptych.common.invocation import command
from triptych.common.tolerances import tolerance
from triptych.crosscheck.spec import Case, Exercise, Variant, locate

GROUP = "course-g"
TITLE = "Course G: accounting answers (a file of named numbers)"
ORDER = 60

COUNT = tolerance("float64", "count")
ROUNDED = 1e-3  # relative: "right to about three significant digits", what a hand-rounded answer keeps

FORMAT = '''# Here every answer is a NUMBER, not a function: one module-level constant per answer. Write the
# arithmetic rather than a rounded result (2 * 48 * 16384**2, math.exp(3) / s): answers are compared
# with `triptych calc` to 1e-9 relative, so 25.77 for 25.769803776 is named "rounded".
# A name left as None reads "not implemented yet"; a name you delete is simply not graded.

'''


# ---------------------------------------------------------------- the calculators, right and with one mistake

def _params(a, key):
    return next(q.value for q in count_parameters(a) if q.key == key)


def _lora(targets=AETHER_LORA_TARGETS, layers=True):
    n = lora_params(AETHER, AETHER_LORA_RANK, targets).value
    return n if layers else n // AETHER.n_layers


def _adam(n, optimizer="adam"):
    return optimizer_state_bytes(n, optimizer, AETHER_ADAM_BYTES_PER_STATE).value


def _scores(n_heads=AETHER.n_heads, bytes_per=AETHER_BYTES_PER_SCORE):
    return attention_scores_bytes(n_heads, AETHER.context, bytes_per).value


def _mlm():
    p, ce = target_probability_and_loss(MLM_TOY_LOGITS, MLM_TOY_TARGET)
    return p.value, ce.value


NO_BIAS = replace(AETHER, bias=False)
E = ENCODER_COURSE
_LN_BETAS = (2 * E.n_layers + 1) * E.d_model  # the bias half of every LayerNorm


@lru_cache(maxsize=1)
def _torch_count() -> int:
    """G.3 by instantiating: torch's own layers built on the meta device (shapes, no storage)."""
    from triptych.calculators.torch_models import build_torch_encoder, count_trainable
    return count_trainable(build_torch_encoder(E, device="meta"))


def _v(name, says, why, fn, fix=None):
    return Variant(name, says, why, lambda i: fn(), fix)


_FIX_SCORES = ("triptych.calculators.memory", "attention_scores_bytes", "n = batch")
_FIX_FFN = ("triptych.calculators.architecture", "ffn_params_per_layer", "n = k * d * ff")
_FIX_LORA = ("triptych.calculators.lora", "lora_params", "per_layer = sum")
_FIX_ADAM = ("triptych.calculators.memory", "optimizer_state_bytes", "n = k * bytes_per_state")
_FIX_LOSS = ("triptych.calculators.loss", "target_probability_and_loss", "ce = lse - z[target]")
_FIX_COUNT = ("triptych.calculators.architecture", "count_parameters", "total_known =")

FORGOT_FFN_BIASES = ("forgot_biases", "the FFN counted without its biases (only the two weight matrices)",
                     "H -> 4H -> H has a bias on each Linear: 4H + H per layer on top of 2 * 4H * H")
ONE_STATE = ("one_adam_state", "Adam state with ONE fp32 state per parameter (4 bytes)",
             "Adam keeps two states per parameter, exp_avg and exp_avg_sq: 2 * 4 = 8 bytes")
LORA_PER_LAYER = ("lora_per_layer", "LoRA counted once per layer instead of once per adapted matrix",
                  "W_Q and W_V each get their own A (r x d) and B (d x r): 2 matrices x r (d + d) per layer")

ANSWERS = [
    # name, what (contract), reference, variants, the scenario that prints it
    ("G1_P_MAT", "G.1: probability of the correct word 'mat' (softmax of the logits)", lambda: _mlm()[0], (
        _v("p_without_exp", "the logit divided by the sum of the logits (3.0 / 4.8)",
           "a softmax normalises exp(z): p = e^z_t / sum_j e^z_j", lambda: MLM_TOY_LOGITS[MLM_TOY_TARGET] / sum(MLM_TOY_LOGITS),
           _FIX_LOSS),
        _v("p_sigmoid", "the sigmoid of the correct logit", "five words compete: a softmax over all logits, not a "
           "yes/no sigmoid of one", lambda: 1 / (1 + math.exp(-MLM_TOY_LOGITS[MLM_TOY_TARGET])), _FIX_LOSS)),
     "mlm-toy"),
    ("G1_CE_LOSS", "G.1: cross-entropy loss in nats (-ln p)", lambda: _mlm()[1], (
        _v("loss_in_bits", "-log2 p (bits)", "cross-entropy in deep learning uses the natural log (nats)",
           lambda: _mlm()[1] / math.log(2), _FIX_LOSS),
        _v("loss_log10", "-log10 p", "cross-entropy uses the natural log: -ln p", lambda: _mlm()[1] / math.log(10),
           _FIX_LOSS),
        _v("loss_without_exp", "-ln(3.0 / 4.8): the loss of a probability computed without the softmax",
           "p must be the softmax e^z_t / sum_j e^z_j first",
           lambda: -math.log(MLM_TOY_LOGITS[MLM_TOY_TARGET] / sum(MLM_TOY_LOGITS)), _FIX_LOSS)),
     "mlm-toy"),
    ("G2C_SCORES_BYTES", "G.2(c): bytes of the QK^T score matrices, one layer, all heads, one sequence, 2 B/score",
     lambda: _scores(), (
        _v("fp32_scores", "4 bytes per score (fp32) instead of 2", "the question fixes 2 bytes per score (fp16/bf16)",
           lambda: _scores(bytes_per=4), _FIX_SCORES),
        _v("one_head", "one head's matrix (T x T), not all 48", "every head has its own T x T score matrix",
           lambda: _scores(n_heads=1), _FIX_SCORES),
        _v("all_layers", "the score matrices of all 48 layers", "the question asks for ONE layer",
           lambda: AETHER.n_layers * _scores(), _FIX_SCORES),
        _v("causal_half", "only the lower triangle (T (T + 1) / 2 scores per head)",
           "a naive implementation materialises the whole T x T matrix even when a causal mask blanks half",
           lambda: AETHER.n_heads * AETHER.context * (AETHER.context + 1) // 2 * AETHER_BYTES_PER_SCORE, _FIX_SCORES)),
     "aether"),
    ("G2C_SCORES_GB", "G.2(c): the same memory in GB (10^9 bytes)", lambda: _scores() / GB, (
        _v("gb_is_gib", "the memory in GiB (2^30 bytes), given as GB", "GB is 10^9 bytes (SI); GiB is 2^30 = "
           "1.0737 GB", lambda: _scores() / GiB, _FIX_SCORES),
        _v("fp32_scores_gb", "4 bytes per score (fp32), in GB", "the question fixes 2 bytes per score",
           lambda: _scores(bytes_per=4) / GB, _FIX_SCORES)),
     "aether"),
    ("G2C_SCORES_GIB", "G.2(c): the same memory in GiB (2^30 bytes)", lambda: _scores() / GiB, (
        _v("gib_is_gb", "the memory in GB (10^9 bytes), given as GiB", "GiB is 2^30 bytes; GB is 10^9",
           lambda: _scores() / GB, _FIX_SCORES),),
     "aether"),
    ("G2D_FFN_PARAMS", "G.2(d): parameters of all FFN sub-layers (H -> 4H -> H, biases included), all layers",
     lambda: _params(AETHER, "ffn_params"), (
        _v(*FORGOT_FFN_BIASES, lambda: _params(NO_BIAS, "ffn_params"), _FIX_FFN),
        _v("ffn_one_layer", "the FFN of ONE layer", "the question asks for all 48 layers' FFN sub-layers",
           lambda: _params(AETHER, "ffn_params_per_layer"), _FIX_FFN)),
     "aether"),
    ("G2E_LORA_PARAMS", "G.2(e): trainable LoRA parameters, rank 8 on W_Q and W_V of every layer",
     lambda: _lora(), (
        _v(*LORA_PER_LAYER, lambda: _lora(("q",)), _FIX_LORA),
        _v("lora_one_layer", "the LoRA parameters of ONE layer", "every one of the 48 layers has its adapters",
           lambda: _lora(layers=False), _FIX_LORA),
        _v("lora_all_four", "LoRA on all four attention matrices (W_Q, W_K, W_V, W_O)",
           "the question adapts W_Q and W_V only", lambda: _lora(("q", "k", "v", "o")), _FIX_LORA)),
     "aether"),
    ("G2E_LORA_ADAM_BYTES", "G.2(e): Adam state memory of the LoRA parameters, bytes (2 fp32 states)",
     lambda: _adam(_lora()), (
        # LoRA counted once per layer halves this number too: the same number, so one name says both.
        _v(ONE_STATE[0], ONE_STATE[1] + " (or LoRA counted once per layer, which also halves it)", ONE_STATE[2],
           lambda: _adam(_lora(), "sgd-momentum"), _FIX_ADAM),
        _v("adam_plus_weights_grads", "weights, gradients and both states (16 bytes per parameter)",
           "the question asks for the optimizer STATE only: 2 x 4 bytes", lambda: 16 * _lora(), _FIX_ADAM)),
     "aether"),
    ("G2E_ADAM_RATIO", "G.2(e): LoRA Adam state / Adam state of the FFN parameters of (d), a fraction",
     lambda: _adam(_lora()) / _adam(_params(AETHER, "ffn_params")), (
        _v("ratio_inverted", "FFN Adam state / LoRA Adam state (the ratio upside down)",
           "the question asks for the LoRA memory as a fraction of the FFN's",
           lambda: _adam(_params(AETHER, "ffn_params")) / _adam(_lora()), None),
        _v("ratio_percent", "the fraction times 100 (a percentage)", "a fraction of 1, not of 100",
           lambda: 100 * _adam(_lora()) / _adam(_params(AETHER, "ffn_params")), None),
        _v("forgot_biases", "the ratio to an FFN counted without biases", FORGOT_FFN_BIASES[2],
           lambda: _adam(_lora()) / _adam(_params(NO_BIAS, "ffn_params")), _FIX_FFN),
        _v(ONE_STATE[0], "the LoRA state with one Adam state against the FFN's two (or LoRA counted once per "
           "layer: the same half)", ONE_STATE[2],
           lambda: _adam(_lora(), "sgd-momentum") / _adam(_params(AETHER, "ffn_params")), _FIX_ADAM)),
     "aether"),
]


def _encoder_variants(torch_side: bool):
    total = _params(E, "total_params")
    lin_biases = E.n_layers * (4 * E.d_model + E.ffn_inner + E.d_model)
    return (
        _v("forgot_biases", "the encoder without the biases of its Linear layers",
           "every projection has a bias: 4 d (W_q, W_k, W_v, W_o) + d_ff + d per layer",
           lambda: total - lin_biases, _FIX_COUNT),
        _v("layernorm_weight_only", "LayerNorms counted with their weight only (d instead of 2 d)",
           "a LayerNorm has a weight AND a bias: 2 d parameters, (2 L + 1) of them", lambda: total - _LN_BETAS,
           _FIX_COUNT),
        # 2 d short has two causes with the same number: the name says both.
        _v("positions_256", "2 d parameters short: 256 learned positions instead of 256 + 2, or the embedding "
           "LayerNorm left out", "RoBERTa's position table has 2 extra rows (positions start after the padding "
           "index), and the embeddings have a LayerNorm of their own (2 d)",
           lambda: _params(replace(E, n_positions=256), "total_params"), _FIX_COUNT),
        _v("ffn_4d", "an FFN of inner size 4 d = 2048" + (" (nn.TransformerEncoderLayer's default dim_feedforward)"
                                                            if torch_side else ""),
           "this exercise's FFN is d x d (W1, W2 512 x 512): pass dim_feedforward=512",
           lambda: _params(replace(E, d_ff=4 * E.d_model), "total_params"), _FIX_COUNT),
        _v("roberta_token_type", "transformers' RobertaModel, with its 1-row token-type table (+ d)",
           "the exercise's encoder has no token-type table; RobertaModel always carries one row",
           lambda: _params(replace(E, token_types=1), "total_params"), _FIX_COUNT),
    )


ANSWERS += [
    ("G3_PARAMS", "G.3: trainable parameters of the encoder, by formula", lambda: _params(E, "total_params"),
     _encoder_variants(False), "encoder-course"),
    ("G3_PARAMS_TORCH", "G.3: trainable parameters of the same encoder instantiated in PyTorch", _torch_count,
     _encoder_variants(True), "encoder-course"),
]


# ---------------------------------------------------------------- judging a number

def _grade_number(ex_variants, reference):
    def grade(case, inputs, got, refs):
        a = got[0]
        if a.size != 1 or a.dtype == bool or not np.issubdtype(a.dtype, np.number):
            return dict(verdict="wrong return type", message=f"expected one number, got an array of shape {a.shape} "
                        f"and dtype {a.dtype}")
        mine, want = float(a.reshape(())), float(reference())
        if not math.isfinite(mine):
            return dict(verdict="NaN/inf", message=f"your number is {mine}")
        err = abs(mine - want)
        fields = dict(max_abs_err=err, tolerance=COUNT.atol + COUNT.rtol * abs(want), shape="()", expected_shape="()")
        if err <= COUNT.atol + COUNT.rtol * abs(want):
            return dict(ok=True, verdict="pass", **fields)
        message = f"{mine:.10g}, expected {want:.10g} (calc): relative error {err / abs(want):.1e}"

        def named(v, value, rounded=False):
            how = " after rounding" if rounded else ""
            return dict(verdict="FAIL", message=message, **fields, mistake=v.name, explanation=v.why,
                        fix_at=locate(v.fix_at),
                        diagnosis=f"your number matches {v.says}{how}: {value:.10g}")
        wrong = [(v, float(v.compute(inputs))) for v in ex_variants]
        for v, value in wrong:
            if abs(mine - value) <= COUNT.atol + COUNT.rtol * abs(value):
                return named(v, value)
        # Rounded by hand: the nearest of the right number and the mistakes, within three digits or so.
        near = [(abs(mine - value), v, value) for v, value in [(None, want), *wrong]
                if abs(mine - value) <= ROUNDED * abs(value)]
        if near:
            _, v, value = min(near, key=lambda t: t[0])
            if v is not None:
                return named(v, value, rounded=True)
            return dict(verdict="FAIL", message=message, **fields, mistake="rounded",
                        diagnosis=f"your number is the right one rounded to a few digits ({want:.10g})",
                        explanation="write the arithmetic (e.g. 2 * 48 * 16384**2) instead of a rounded result")
        return dict(verdict="FAIL", message=message, **fields,
                    diagnosis=f"your number is {mine / want:.6g} times the expected one" if want else None)
    return grade


def _exercise(name, what, reference, variants, scenario):
    return Exercise(
        name, GROUP, f"{name} = <number>", what, f"your number vs `{command('calc', scenario)}` (1e-9 relative)",
        target={"kind": "value", "name": name},
        reference=lambda m, i: np.float64(reference()), backends=("numpy",),
        cases=(Case("the course's numbers", lambda rng, dt: {}),),
        variants=variants, tol_kind="count", grade=_grade_number(variants, reference),
        skeleton={fw: f"# {what}\n{name} = None  # TODO: a number or an expression\n" for fw in ("numpy", "torch", "jax")},
        notes=f"A module-level constant in your answers file: `{name} = ...` (an expression such as "
              "2 * 48 * 16384**2 is fine; a hand-rounded number is named 'rounded').",
    )


EXERCISES = [_exercise(*answer) for answer in ANSWERS]
# The first stub also explains the file's format (the skeleton header speaks of functions).
EXERCISES[0] = replace(EXERCISES[0], skeleton={fw: FORMAT + s
                                              for fw, s in EXERCISES[0].skeleton.items()})
