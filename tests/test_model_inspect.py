"""`model inspect` / `model attention` and the tracer under them (triptych/pretrained/trace.py, trace_bert.py).

The references are Hugging Face's: the hooked modules of LlamaForCausalLM / BertModel, and, apart
from the hooks, HF's own logits, output_hidden_states and output_attentions. SmolLM2 runs cut to
its first 2 layers, MiniLM on one short sentence, so the file stays well under two minutes.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from triptych import cli
from triptych.commands._model_inspect import parse_layers
from triptych.common.checks import InputError
from triptych.common.tolerances import assert_close, tolerance
from triptych.pretrained import ModelMissingError, trace

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The capital of France is Paris."
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _smollm2(n_layers: int, dtype: str):
    from triptych.pretrained import smollm2

    try:
        return smollm2.load_llama(n_layers=n_layers, dtype=dtype)
    except ModelMissingError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def ids():
    from tokenizers import Tokenizer

    from triptych.bpe.smollm2 import tokenizer_json

    try:
        tok = Tokenizer.from_file(str(tokenizer_json()))
    except ModelMissingError as e:
        pytest.skip(str(e))
    return np.array([tok.encode(TEXT).ids])


@pytest.fixture(scope="module")
def minilm_inputs():
    from triptych.pretrained import minilm

    try:
        params, config = minilm.load("float64")
    except ModelMissingError as e:
        pytest.skip(str(e))
    batch = dict(minilm.tokenizer()("A cat sat on the mat.", return_tensors="np"))
    return params, config, batch


def _hf_llama(params, config, dtype: str):
    from torch_ref.llama import hf_model

    f64 = dtype == "float64"  # HF's float32 RMSNorm and rotary swapped; sdpa keeps the softmax in float64
    return hf_model(params, config, dtype=getattr(torch, dtype), attn_implementation="sdpa" if f64 else "eager",
                    exact_float64=f64)


# ----------------------------------------------------------------------------------------------
# the tracer


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_trace_is_the_numpy_forward_bit_for_bit(ids, dtype):
    from numpy_impl.llama import llama_forward, llama_hidden_states

    params, config = _smollm2(2, dtype)
    steps = trace.trace_llama(params, ids, config, "numpy")
    assert [(s.layer, s.name) for s in steps[1:15]] == [(0, n) for n in trace.LLAMA_STEPS]
    assert np.array_equal(steps[-1].value, llama_forward(params, ids, config))
    states = llama_hidden_states(params, ids, config)
    for i in range(config.n_layers):
        got = next(s.value for s in steps if (s.layer, s.name) == (i, "resid_mlp"))
        assert np.array_equal(got, states[i + 1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_trace_is_the_jitted_forward_up_to_rounding(ids, dtype):
    from jax_impl.llama import llama_forward

    params, config = _smollm2(2, dtype)
    steps = trace.trace_llama(params, ids, config, "jax")
    # Piece by piece instead of one jitted program: only float rounding may differ (measured 1e-13
    # in float64 over all 30 layers).
    assert_close(steps[-1].value, np.asarray(llama_forward(params, ids, config)), dtype,
                 "value" if dtype == "float64" else "real_model", "jax traced logits")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_llama_steps_equal_hf_hooked_values(ids, dtype):
    params, config = _smollm2(2, dtype)
    model = _hf_llama(params, config, dtype)
    ref = trace.hf_trace_llama(model, ids)
    rows = trace.compare({b: trace.trace_llama(params, ids, config, b) for b in trace.BACKENDS}, ref,
                         tolerance(dtype, "real_model"))
    assert len(rows) == 3 + 14 * config.n_layers
    bad = [(trace.where(r), r["used"]) for r in rows if not r["ok"]]
    assert not bad, bad
    assert trace.first_divergence(rows) is None
    # Every step carries signal (no all-zero capture hiding a comparison of nothing).
    assert min(r["norm"]["hf"] for r in rows) > 0.1
    # The hooks changed nothing, and the hooked residual stream is HF's own output_hidden_states.
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), output_hidden_states=True)
    assert np.array_equal(ref[-1].value, out.logits.numpy())
    for i in range(config.n_layers - 1):  # HF's last entry comes after the final norm
        assert np.array_equal(next(s.value for s in ref if (s.layer, s.name) == (i, "resid_mlp")),
                              out.hidden_states[i + 1].numpy())


def test_attention_weights_equal_hf_output_attentions(ids):
    params, config = _smollm2(2, "float32")
    ours = trace.llama_attention_weights(params, ids, config, 1)
    with torch.no_grad():
        ref = _hf_llama(params, config, "float32")(input_ids=torch.from_numpy(ids), output_attentions=True).attentions[1]
    assert_close(ours, ref.numpy(), "float32", "value", "layer 1 attention probabilities")
    assert np.allclose(ours.sum(-1), 1.0) and not np.triu(ours[0, 0], 1).any()  # rows sum to 1, causal
    with pytest.raises(InputError, match=r"layer: expected an integer in \[0, 1\]"):
        trace.llama_attention_weights(params, ids, config, 2)


def test_minilm_trace_equals_our_encoder_and_hf(minilm_inputs):
    import numpy_impl.bert as nb

    from triptych.pretrained import minilm, trace_bert

    params64, config, batch = minilm_inputs
    args = (batch["input_ids"], params64, config.num_attention_heads, batch["attention_mask"],
            batch["token_type_ids"], config.layer_norm_eps)
    steps = trace_bert.trace_bert(params64, batch, config, "numpy")
    assert np.array_equal(steps[-2].value, nb.bert_encoder(*args)[-1])  # the last mlp_ln
    assert np.array_equal(steps[-1].value, nb.sentence_embedding(*args))
    for dtype in ("float32", "float64"):
        params = {k: v.astype(dtype) for k, v in params64.items()}
        model = minilm.hf_model(dtype)
        ref = trace_bert.hf_trace_bert(model, batch)
        rows = trace.compare({b: trace_bert.trace_bert(params, batch, config, b) for b in trace.BACKENDS}, ref,
                             tolerance(dtype))
        assert len(rows) == 3 + 12 * config.num_hidden_layers
        assert all(r["ok"] for r in rows), [(trace.where(r), r["used"]) for r in rows if not r["ok"]]
        # The pooled reference agrees with the model card's recipe computed apart from the hooks.
        assert_close(ref[-1].value, minilm.hf_embed(["A cat sat on the mat."], dtype, model), dtype)
    w = trace_bert.bert_attention_weights(params64, batch, config, 2)
    w_hf = trace_bert.hf_bert_attention_weights(model, batch, 2)
    assert_close(w, w_hf, "float64", what="MiniLM layer 2 attention (bidirectional)")
    assert np.triu(w[0, 0], 1).any()  # not causal: later keys are seen


# ----------------------------------------------------------------------------------------------
# the commands


def test_parse_layers():
    assert parse_layers(None, 30) == (30, list(range(30)))
    assert parse_layers("2", 30) == (2, [0, 1])
    assert parse_layers("0,1,29", 30) == (30, [0, 1, 29])
    assert parse_layers("7,", 30) == (8, [7])
    for bad in ("0", "31", "30,", "-1,2", "a", ","):
        with pytest.raises(InputError, match=r"--layers: expected a count in \[1, 30\]"):
            parse_layers(bad, 30)


def _cli(*argv, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_cli_inspect_two_layers_table(ids):
    _smollm2(2, "float32")
    p = _cli("model", "inspect", "--layers", "2", TEXT)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "cut to its first 2 of 30 layers" in out and "|NumPy|" in out and "|JAX|" in out and "|torch (HF)|" in out
    for step in ("q_rope", "attention", "resid_attn", "resid_mlp", "final_norm", "logits"):
        assert step in out
    assert "no divergence: all 31 steps within the float32 tolerance" in out
    assert "Traceback" not in p.stderr


def test_cli_attention_table_and_png(ids, tmp_path):
    _smollm2(1, "float32")
    p = _cli("model", "attention", TEXT, "--layer", "0", "--head", "0", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    png = tmp_path / "smollm2-layer0-head0.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f"heatmap saved: {png}\n" in p.stdout  # one unwrapped line
    assert "query \\ key" in p.stdout and "France" in p.stdout and "within" in p.stdout
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left no temporary file


def test_injected_error_names_layer_and_step(ids, monkeypatch, capsys):
    _smollm2(2, "float32")
    import numpy_impl.swiglu as sw

    real, calls = sw.swiglu_mlp_forward, []  # what numpy_impl.llama_block.llama_layer calls

    def broken(x, params):  # right in layer 0, off by 1e-2 in layer 1's MLP
        calls.append(1)
        out, cache = real(x, params)
        return (out + np.float32(1e-2) if len(calls) == 2 else out), cache

    monkeypatch.setattr(sw, "swiglu_mlp_forward", broken)
    assert cli.main(["model", "inspect", "--layers", "2", "--backend", "numpy", "--json", TEXT]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["first_divergence"]["layer"] == 1 and out["first_divergence"]["step"] == "mlp"
    assert out["summary"].startswith("first divergence: layer 1 mlp (numpy: max |err| 1.00e-02")
    assert not out["ok"] and all(r["ok"] for r in out["rows"][:1 + 14 + 12])  # all before it pass


@pytest.mark.parametrize("argv, message", [
    (["model", "attention", TEXT, "--layer", "30", "--head", "0"], "--layer: expected an integer in [0, 29]"),
    (["model", "attention", TEXT, "--layer", "0", "--head", "9"], "--head: expected an integer in [0, 8]"),
    (["model", "attention", "--model", "minilm", TEXT, "--layer", "6", "--head", "0"], "--layer: expected an integer in [0, 5]"),
    (["model", "inspect", "--layers", "31", TEXT], "--layers: expected a count in [1, 30]"),
    (["model", "inspect", "--backend", "torch", TEXT], "--backend: expected a comma-separated list of numpy, jax"),
    (["model", "inspect", "  "], "argument text: expected non-empty text"),
    (["model", "attention", TEXT, "--layer", "0", "--head", "-1"], "argument --head: expected a non-negative integer"),
])
def test_bad_arguments_one_line_exit_2(ids, capsys, argv, message):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # a negative number or empty text is refused as the command line is read
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_head_in_a_subprocess_has_no_traceback(ids):
    p = _cli("model", "attention", TEXT, "--layer", "0", "--head", "9", timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--head: expected an integer in [0, 8]" in p.stderr
