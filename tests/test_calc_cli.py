"""`python cli.py calc ...` as a user runs it: JSON keys, values against independent torch/peft
references, the LoRA demo's plot and loss curve, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from triptych import cli
ROOT = Path(__file__).resolve().parents[1]


def run_json(capsys, *args) -> dict:
    assert cli.main(["calc", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def meta_numel(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def test_aether_json_keys_and_values_against_meta_torch_and_peft(capsys):
    from peft import LoraConfig, get_peft_model

    from torch_ref.lora import SeparateProjectionMHA

    out = run_json(capsys, "aether")
    for key in ("attention_scores_bytes", "ffn_params", "lora_params", "lora_adam_bytes", "ffn_adam_bytes",
                "lora_to_ffn_adam_ratio"):
        assert key in out and key in out["details"], key
    H, L = 6144, 48
    with torch.device("meta"):  # the real shapes, no storage
        ffn = nn.Sequential(nn.Linear(H, 4 * H), nn.GELU(), nn.Linear(4 * H, H))
        attn = SeparateProjectionMHA(H, 48, dtype=torch.float32)
        scores = torch.empty(48, 16384, 16384, dtype=torch.float16)
    lora_per_layer = get_peft_model(attn, LoraConfig(r=8, target_modules=["q_proj", "v_proj"])).get_nb_trainable_parameters()[0]
    assert out["attention_scores_bytes"] == scores.nbytes
    assert out["ffn_params"] == L * meta_numel(ffn)
    assert out["lora_params"] == L * lora_per_layer
    assert out["lora_adam_bytes"] == 2 * 4 * out["lora_params"]  # 2 fp32 states (measured in test_calc_memory)
    assert out["ffn_adam_bytes"] == 2 * 4 * out["ffn_params"]
    assert out["lora_to_ffn_adam_ratio"] == pytest.approx(lora_per_layer / meta_numel(ffn), rel=1e-12)
    assert out["details"]["attention_scores_bytes"]["GiB"] == scores.nbytes / 2 ** 30


def test_encoder_course_json_prints_formula_and_torch_counts(capsys):
    out = run_json(capsys, "encoder-course")
    assert out["params_formula"] == out["params_torch"]
    assert out["params_roberta_torch"] == out["params_torch"] + 512  # RoBERTa's 1-row token-type table
    assert out["architecture"]["d_ff"] == 512 and out["architecture"]["n_positions"] == 258


def test_encoder_course_table_states_its_assumptions(capsys):
    assert cli.main(["calc", "encoder-course"]) == 0
    text = capsys.readouterr().out
    assert "258 learned positions" in text and "FFN inner size = d_model" in text and "equal" in text


def test_mlm_toy_json_against_torch(capsys):
    out = run_json(capsys, "mlm-toy")
    z = torch.tensor([[0.5, 0.1, 3.0, 0.2, 1.0]], dtype=torch.float64)
    assert out["p_target"] == pytest.approx(torch.softmax(z, -1)[0, 2].item(), rel=1e-14)
    assert out["cross_entropy"] == pytest.approx(F.cross_entropy(z, torch.tensor([2])).item(), rel=1e-14)


def test_generic_model_matches_its_torch_build_and_prints_units(capsys):
    out = run_json(capsys, "model", "--layers", "3", "--hidden", "48", "--heads", "6", "--context", "32",
                   "--vocab", "1000", "--ffn-inner", "80", "--no-bias", "--untied", "--lora-targets", "q,k,v,o,ffn_in",
                   "--check-torch")
    assert out["params_match"] is True and out["params_torch"] == out["total_params"]
    assert out["lora_params"] == 3 * 8 * (4 * (48 + 48) + (48 + 80))
    assert cli.main(["calc", "model", "--layers", "2", "--hidden", "64", "--heads", "4", "--context", "128"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # prose wraps at the terminal's width
    assert "bytes" in text and " GB" in text and " GiB" in text and "vocabulary not given" in text


LLAMA_3_8B_FLAGS = ("--layers", "32", "--hidden", "4096", "--heads", "32", "--kv-heads", "8", "--context", "8192",
                    "--vocab", "128256", "--ffn-inner", "14336", "--ffn", "swiglu", "--norm", "rmsnorm",
                    "--positions", "rope", "--no-bias", "--untied")


def test_llama_3_8b_from_flags_against_hf_on_the_meta_device(capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    out = run_json(capsys, "model", *LLAMA_3_8B_FLAGS, "--check-torch")
    with torch.device("meta"):
        hf = LlamaForCausalLM(LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                          num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                          tie_word_embeddings=False))
    assert out["total_params"] == meta_numel(hf) == out["params_hf"] == out["params_torch"]
    assert out["hf_model"] == "LlamaForCausalLM" and out["params_match"] is True
    assert out["architecture"]["n_kv_heads"] == 8 and out["architecture"]["ffn"] == "swiglu"
    assert "2*32*8*128*2" in out["details"]["kv_cache_bytes_per_token"]["formula"]


def test_kv_cache_line_equals_a_real_hf_cache(capsys):
    """--context, --batch and --kv-bytes against the keys and values HF's Llama caches in float32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = run_json(capsys, "model", "--layers", "2", "--hidden", "24", "--heads", "6", "--kv-heads", "2",
                   "--head-dim", "6", "--context", "5", "--batch", "3", "--kv-bytes", "4", "--vocab", "40",
                   "--ffn", "swiglu", "--norm", "rmsnorm", "--positions", "rope", "--no-bias", "--check-torch")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=24, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=6, num_key_value_heads=2, head_dim=6,
                                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=None))
    with torch.no_grad():
        cache = model(torch.zeros(3, 5, dtype=torch.long), use_cache=True).past_key_values
    assert out["kv_cache_bytes"] == sum(l.keys.nbytes + l.values.nbytes for l in cache.layers)
    assert out["total_params"] == meta_numel(model) == out["params_hf"]


def test_shape_without_an_hf_family_is_counted_by_the_torch_build(capsys):
    """GPT-3 XL's table row taken literally: 24 heads of 128 on d_model 2048 (GPT-2 cannot)."""
    args = ("model", "--layers", "24", "--hidden", "2048", "--heads", "24", "--head-dim", "128", "--context", "2048",
            "--vocab", "50257", "--check-torch")
    out = run_json(capsys, *args)
    assert out["hf_model"] is None and out["params_match"] is True
    assert cli.main(["calc", *args]) == 0
    text = capsys.readouterr().out
    assert "no Hugging Face family has this shape" in text and "equal" in text and "h*d_head=3072" in text


def test_loss_command_with_labels(capsys):
    out = run_json(capsys, "loss", "--logits", "1,2,3", "--target", "0", "--labels", "a,b,c")
    z = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    assert out["cross_entropy"] == pytest.approx(F.cross_entropy(z, torch.tensor([0])).item(), rel=1e-14)


def test_lora_demo_writes_a_png_and_the_loss_goes_down(capsys, tmp_path):
    out = run_json(capsys, "lora-demo", "--steps", "120", "--out", str(tmp_path / "demo"))
    png = tmp_path / "demo" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert saved["loss_final"] == out["loss_final"] < 1e-4 * out["loss_initial"]
    assert all(b < a for a, b in zip(out["losses_every_10"], out["losses_every_10"][1:]))
    assert out["trainable_params"] == 4 * (64 + 48) and out["frozen_params"] == 64 * 48 + 48


@pytest.mark.parametrize("args, fragment", [
    (("model", "--layers", "-2", "--hidden", "12", "--heads", "3", "--context", "4"),
     "argument --layers: expected a positive integer, got '-2'"),
    (("model", "--layers", "2", "--hidden", "10", "--heads", "3", "--context", "4"),
     "n_heads: expected a divisor of d_model=10, got 3"),
    (("model", "--layers", "2", "--hidden", "12", "--heads", "3", "--context", "4", "--lora-rank", "13"),
     "rank: expected a rank <= min(d_in, d_out) = 12 for a (12, 12) matrix, got 13"),
    (("model", "--layers", "2", "--hidden", "12", "--heads", "4", "--kv-heads", "3", "--context", "4"),
     "n_kv_heads: expected a divisor of n_heads=4"),
    (("model", "--layers", "2", "--hidden", "12", "--heads", "4", "--head-dim", "0", "--context", "4"),
     "argument --head-dim: expected a positive integer, got '0'"),
    (("model", "--layers", "2", "--hidden", "12", "--heads", "4", "--kind", "encoder", "--norm", "rmsnorm",
      "--context", "4"), "norm: expected only with kind='decoder'"),
    (("model", "--layers", "2", "--hidden", "12", "--heads", "4", "--kv-bytes", "0", "--context", "4"),
     "argument --kv-bytes: expected a positive integer, got '0'"),
    (("loss", "--logits", "1,x", "--target", "0"), "--logits: expected comma-separated numbers"),
    (("lora-demo", "--rank", "70"), "r: expected a rank <= min(d_in, d_out) = 48"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, fragment):
    try:
        code = cli.main(["calc", *args])
    except SystemExit as e:  # a bad number is refused as the command line is read
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, value", [("--ffn", "relu"), ("--norm", "batchnorm"), ("--kv-heads", "two")])
def test_bad_flag_value_is_argparse_one_line_and_exit_2(capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        cli.main(["calc", "model", "--layers", "2", "--hidden", "12", "--heads", "4", "--context", "4", flag, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}: " in err and len(err.strip().splitlines()) == 1
    assert "invalid" in err or f"expected a positive integer, got '{value}'" in err


def test_bad_input_from_a_real_subprocess_has_no_traceback():
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "calc", "model", "--layers", "2", "--hidden", "-8",
                        "--heads", "2", "--context", "4"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # refused as the command line is read, by the flag's name
    assert r.stderr.strip() == "error: cli.py calc model: argument --hidden: expected a positive integer, got '-8' (see --help)"
