"""Parameter formulas against real torch models, counted exactly, component by component.

References are built here from torch / transformers / peft directly (nn.TransformerEncoderLayer
stacks, a nanoGPT-style GPT, GPT2LMHeadModel, BertModel, RobertaModel, LlamaForCausalLM,
Qwen2ForCausalLM, GPTNeoXForCausalLM, peft-wrapped models), not from calculators.torch_models, so a
shared mistake cannot hide; that builder is checked against them too. Real models' published counts:
tests/test_calc_real_models.py."""
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from triptych.calculators import Architecture, count_parameters, lora_params, lora_params_for_matrix
from triptych.calculators.torch_models import build_hf_decoder, build_torch_model, count_trainable, hf_decoder_family
from triptych.common.checks import InputError


def numel(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def formula(a: Architecture) -> dict:
    return {q.key: q.value for q in count_parameters(a)}


# ----------------------------------------------------------------------------------------------
# Encoders: nn.TransformerEncoderLayer stacks with embeddings.

ENCODERS = [
    dict(n_layers=2, d_model=16, n_heads=4, context=12, vocab_size=50, d_ff=24, bias=True),
    dict(n_layers=3, d_model=12, n_heads=3, context=8, vocab_size=31, ffn_mult=2, bias=False),
    dict(n_layers=1, d_model=8, n_heads=2, context=6, vocab_size=17, d_ff=8, positions="sinusoidal", token_types=2,
         pooler=True),
]


class TorchEncoder(nn.Module):
    def __init__(self, V, P, types, d, h, d_ff, L, bias, pooler):
        super().__init__()
        self.tok = nn.Embedding(V, d)
        self.pos = nn.Embedding(P, d) if P else None
        self.types = nn.Embedding(types, d) if types else None
        self.norm = nn.LayerNorm(d, bias=bias)
        self.stack = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, h, dim_feedforward=d_ff, bias=bias, batch_first=True), L,
            enable_nested_tensor=False)
        self.pooler = nn.Linear(d, d, bias=bias) if pooler else None


@pytest.mark.parametrize("cfg", ENCODERS, ids=["bias", "no-bias", "sinusoidal-types-pooler"])
def test_encoder_components_match_transformer_encoder_layer_stack(cfg):
    a = Architecture(kind="encoder", **cfg)
    m = TorchEncoder(a.vocab_size, a.positions_rows if a.positions == "learned" else 0, a.token_types, a.d_model,
                     a.n_heads, a.ffn_inner, a.n_layers, a.bias, a.pooler)
    layers = list(m.stack.layers)
    f = formula(a)
    assert f["embedding_params"] == numel(*(e for e in (m.tok, m.pos, m.types) if e is not None))
    assert f["attention_params"] == numel(*(l.self_attn for l in layers))
    assert f["attention_params_per_layer"] == numel(layers[0].self_attn)
    assert f["ffn_params"] == numel(*(l.linear1 for l in layers), *(l.linear2 for l in layers))
    assert f["norm_params"] == numel(m.norm, *(l.norm1 for l in layers), *(l.norm2 for l in layers))
    assert f.get("pooler_params", 0) == (numel(m.pooler) if m.pooler is not None else 0)
    assert f["head_params"] == 0
    assert f["total_params"] == numel(m) == count_trainable(build_torch_model(a))


# ----------------------------------------------------------------------------------------------
# Decoders: a nanoGPT-style GPT written here, and transformers' GPT-2.

class GPTBlock(nn.Module):
    def __init__(self, d, d_ff, bias):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, bias=bias)
        self.c_attn = nn.Linear(d, 3 * d, bias=bias)  # q, k, v packed, as nanoGPT
        self.c_proj = nn.Linear(d, d, bias=bias)
        self.ln_2 = nn.LayerNorm(d, bias=bias)
        self.c_fc = nn.Linear(d, d_ff, bias=bias)
        self.mlp_proj = nn.Linear(d_ff, d, bias=bias)


class GPT(nn.Module):
    def __init__(self, V, P, d, d_ff, L, bias, tied):
        super().__init__()
        self.wte = nn.Embedding(V, d)
        self.wpe = nn.Embedding(P, d) if P else None
        self.h = nn.ModuleList(GPTBlock(d, d_ff, bias) for _ in range(L))
        self.ln_f = nn.LayerNorm(d, bias=bias)
        self.lm_head = nn.Linear(d, V, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight


@pytest.mark.parametrize("bias, tied, positions", [(True, True, "learned"), (False, False, "rope"),
                                                   (True, False, "learned")])
def test_decoder_components_match_a_gpt(bias, tied, positions):
    a = Architecture(n_layers=3, d_model=16, n_heads=4, context=10, vocab_size=40, bias=bias, tied_embeddings=tied,
                     positions=positions)
    m = GPT(40, 10 if positions == "learned" else 0, 16, 64, 3, bias, tied)
    f = formula(a)
    assert f["embedding_params"] == numel(*(e for e in (m.wte, m.wpe) if e is not None))
    assert f["attention_params"] == numel(*(b.c_attn for b in m.h), *(b.c_proj for b in m.h))
    assert f["ffn_params"] == numel(*(b.c_fc for b in m.h), *(b.mlp_proj for b in m.h))
    assert f["norm_params"] == numel(m.ln_f, *(b.ln_1 for b in m.h), *(b.ln_2 for b in m.h))
    assert f["head_params"] == (0 if tied else m.lm_head.weight.numel())
    assert f["total_params"] == numel(m) == count_trainable(build_torch_model(a))


@pytest.mark.parametrize("tied", [True, False])
def test_decoder_total_matches_transformers_gpt2(tied):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4, tie_word_embeddings=tied)
    model = GPT2LMHeadModel(config)
    a = Architecture(n_layers=2, d_model=32, n_heads=4, context=24, vocab_size=97, tied_embeddings=tied)
    assert formula(a)["total_params"] == numel(model)
    block = model.transformer.h[0]
    assert formula(a)["attention_params_per_layer"] == numel(block.attn)
    assert formula(a)["ffn_params_per_layer"] == numel(block.mlp)


def hf_meta(config_class: str, model_class: str, **config):
    import transformers

    with torch.device("meta"):  # shapes only
        return getattr(transformers, model_class)(getattr(transformers, config_class)(bos_token_id=None,
                                                                                      eos_token_id=None, **config))


def modern(**kw) -> Architecture:
    return Architecture(**{**dict(n_layers=2, d_model=32, n_heads=4, context=16, vocab_size=61, d_ff=40, ffn="swiglu",
                                  norm="rmsnorm", positions="rope", bias=False, tied_embeddings=False), **kw})


def llama_config(a: Architecture) -> dict:
    return dict(vocab_size=a.vocab_size, hidden_size=a.d_model, intermediate_size=a.d_ff,
                num_hidden_layers=a.n_layers, num_attention_heads=a.n_heads, num_key_value_heads=a.kv_heads,
                head_dim=a.d_head, attention_bias=a.bias, mlp_bias=a.bias, tie_word_embeddings=a.tied_embeddings,
                max_position_embeddings=a.context)


@pytest.mark.parametrize("kw", [
    dict(),                                              # MHA, untied, no biases
    dict(n_kv_heads=2),                                  # GQA: 2 query heads per K/V head
    dict(n_kv_heads=1, tied_embeddings=True),            # MQA, tied
    dict(head_dim=12),                                   # 4 heads of 12 = 48 != d = 32
    dict(n_kv_heads=2, head_dim=20, bias=True),          # attention_bias and mlp_bias on
], ids=["mha", "gqa", "mqa-tied", "head-dim", "gqa-head-dim-bias"])
def test_llama_style_components_match_hf_llama(kw):
    a = modern(**kw)
    m = hf_meta("LlamaConfig", "LlamaForCausalLM", **llama_config(a))
    f, layers = formula(a), m.model.layers
    assert f["attention_params_per_layer"] == numel(layers[0].self_attn)
    assert f["ffn_params_per_layer"] == numel(layers[0].mlp)
    assert f["norm_params"] == numel(m.model.norm, *(l.input_layernorm for l in layers),
                                     *(l.post_attention_layernorm for l in layers))
    assert f["embedding_params"] == numel(m.model.embed_tokens)
    assert f["head_params"] == (0 if a.tied_embeddings else m.lm_head.weight.numel())
    assert f["total_params"] == numel(m) == count_trainable(build_torch_model(a, "meta"))
    family, built, _ = build_hf_decoder(a)
    assert family == "LlamaForCausalLM" and numel(built) == numel(m)


def test_qwen2_biases_on_q_k_v_only():
    a = modern(n_kv_heads=2, qkv_bias=True)
    m = hf_meta("Qwen2Config", "Qwen2ForCausalLM", vocab_size=61, hidden_size=32, intermediate_size=40,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    attn = m.model.layers[0].self_attn
    assert attn.o_proj.bias is None and attn.k_proj.bias.shape == (16,)
    assert formula(a)["attention_params_per_layer"] == numel(attn)
    assert formula(a)["total_params"] == numel(m) == count_trainable(build_torch_model(a, "meta"))
    assert build_hf_decoder(a)[0] == "Qwen2ForCausalLM"


@pytest.mark.parametrize("tied", [True, False])
def test_layernorm_gelu_with_rotary_positions_matches_hf_gpt_neox(tied):
    a = Architecture(n_layers=2, d_model=32, n_heads=4, context=16, vocab_size=61, positions="rope",
                     tied_embeddings=tied)
    m = hf_meta("GPTNeoXConfig", "GPTNeoXForCausalLM", vocab_size=61, hidden_size=32, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, tie_word_embeddings=tied)
    assert formula(a)["attention_params_per_layer"] == numel(m.gpt_neox.layers[0].attention)
    assert formula(a)["ffn_params_per_layer"] == numel(m.gpt_neox.layers[0].mlp)
    assert formula(a)["total_params"] == numel(m) == count_trainable(build_torch_model(a, "meta"))
    assert build_hf_decoder(a)[0] == "GPTNeoXForCausalLM"


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 3), h_kv=st.integers(1, 4), group=st.integers(1, 4), d_head=st.sampled_from([2, 4, 6, 10]),
       d_per_head=st.integers(1, 6), d_ff=st.integers(1, 50), V=st.integers(1, 90), tied=st.booleans(),
       bias=st.booleans())
def test_any_llama_shape_matches_hf_llama(L, h_kv, group, d_head, d_per_head, d_ff, V, tied, bias):
    """Head size free of d / h, any grouping, biases and tying: the formula is HF's count. (HF's
    LlamaConfig still asks that h divide d, so d is drawn as a multiple of h.)"""
    h = h_kv * group
    a = modern(n_layers=L, d_model=h * d_per_head, n_heads=h, n_kv_heads=h_kv, head_dim=d_head, d_ff=d_ff,
               vocab_size=V, tied_embeddings=tied, bias=bias)
    assert formula(a)["total_params"] == numel(hf_meta("LlamaConfig", "LlamaForCausalLM", **llama_config(a)))


def test_mixed_parts_have_no_hf_family_and_are_counted_by_the_torch_build():
    """LayerNorm with SwiGLU, RMSNorm with GELU, GPT-2 without biases: no HF class has these shapes."""
    for a in (modern(norm="layernorm"), modern(ffn="gelu"), modern(positions="learned"),
              Architecture(n_layers=2, d_model=32, n_heads=4, context=16, vocab_size=61, bias=False)):
        assert hf_decoder_family(a) is None
        assert formula(a)["total_params"] == count_trainable(build_torch_model(a, "meta"))


@pytest.mark.parametrize("pooler", [False, True])
def test_encoder_total_matches_transformers_bert_and_roberta(pooler):
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    sizes = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                 max_position_embeddings=40)
    bert = BertModel(BertConfig(type_vocab_size=2, **sizes), add_pooling_layer=pooler)
    roberta = RobertaModel(RobertaConfig(type_vocab_size=1, **sizes), add_pooling_layer=pooler)
    common = dict(n_layers=2, d_model=32, n_heads=4, context=38, vocab_size=101, d_ff=48, n_positions=40,
                  kind="encoder", pooler=pooler)
    assert formula(Architecture(token_types=2, **common))["total_params"] == numel(bert)
    assert formula(Architecture(token_types=1, **common))["total_params"] == numel(roberta)


def test_encoder_course_formula_equals_the_instantiated_model():
    """Exercise G.3's model: a plain-torch build and transformers' RobertaModel (which adds a 1-row
    token-type table: exactly d more parameters)."""
    from transformers import RobertaConfig, RobertaModel

    from triptych.calculators.scenarios import ENCODER_COURSE

    a = ENCODER_COURSE
    assert (a.n_layers, a.d_model, a.n_heads, a.vocab_size, a.ffn_inner, a.positions_rows) == (4, 512, 8, 32000, 512, 258)
    with torch.device("meta"):  # shapes only: the count is the same, no 90 MB allocation
        roberta = RobertaModel(RobertaConfig(vocab_size=32000, hidden_size=512, num_hidden_layers=4,
                                             num_attention_heads=8, intermediate_size=512,
                                             max_position_embeddings=258, type_vocab_size=1), add_pooling_layer=False)
    assert formula(a)["total_params"] == numel(roberta) - 512
    assert formula(a)["total_params"] == count_trainable(build_torch_model(a, device="meta"))


# ----------------------------------------------------------------------------------------------
# LoRA: peft-wrapped models, trainable parameters counted by peft itself.

# peft 0.21 asks transformers 5 a question it has renamed (torch_ref/finetune/models.py filters it too).
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
@pytest.mark.parametrize("targets, peft_targets", [
    (("q", "v"), ["query", "value"]),
    (("q", "k", "v", "o"), ["query", "key", "value", "attention.output.dense"]),
    # a regex: "output.dense" alone would also match each layer's attention.output.dense
    (("ffn_in", "ffn_out"), r".*layer\.\d+\.(intermediate|output)\.dense$"),
])
def test_lora_params_equal_peft_trainable_count(targets, peft_targets):
    from peft import LoraConfig, get_peft_model
    from transformers import RobertaConfig, RobertaModel

    model = RobertaModel(RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                       intermediate_size=48, max_position_embeddings=20), add_pooling_layer=False)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=peft_targets))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    a = Architecture(n_layers=3, d_model=32, n_heads=4, context=18, d_ff=48, kind="encoder")
    assert lora_params(a, 4, targets).value == trainable
    assert trainable == count_trainable(peft_model)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_lora_on_grouped_query_attention_and_swiglu_equals_peft():
    """k and v are h_kv d_head wide, q and o h d_head; SwiGLU adds the gate as a target."""
    from peft import LoraConfig, get_peft_model

    a = modern(n_kv_heads=2, head_dim=12)
    model = hf_meta("LlamaConfig", "LlamaForCausalLM", **llama_config(a))
    targets = ("q", "k", "v", "o", "ffn_gate", "ffn_in", "ffn_out")
    hf_names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for ours, theirs in ((targets, hf_names), (("k", "v"), ["k_proj", "v_proj"])):
        peft_model = get_peft_model(hf_meta("LlamaConfig", "LlamaForCausalLM", **llama_config(a)),
                                    LoraConfig(r=3, target_modules=theirs))
        assert lora_params(a, 3, ours).value == peft_model.get_nb_trainable_parameters()[0]
    assert numel(model) == formula(a)["total_params"]


def test_lora_params_for_aether_equal_peft_on_a_meta_layer():
    """G.2's rank-8 LoRA on W_Q, W_V: peft counts one 6144-wide layer (meta device, no memory); x 48 layers."""
    from peft import LoraConfig, get_peft_model

    from triptych.calculators.scenarios import AETHER
    from torch_ref.lora import SeparateProjectionMHA

    with torch.device("meta"):
        layer = SeparateProjectionMHA(6144, 48, dtype=torch.float32)
    peft_layer = get_peft_model(layer, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    assert lora_params(AETHER, 8, ("q", "v")).value == 48 * peft_layer.get_nb_trainable_parameters()[0]


def test_lora_mha_from_torch_ref_counts_as_formula():
    import numpy as np

    from triptych.common.params import init_mha_params
    from numpy_impl.lora import init_lora_mha_params
    from torch_ref.lora import peft_lora_mha

    params = {k: torch.from_numpy(v) for k, v in init_mha_params(24).items()}
    lora = {t: {k: torch.from_numpy(np.asarray(v)) for k, v in d.items()}
            for t, d in init_lora_mha_params(24, 3, ("q", "v"), "random").items()}
    model = peft_lora_mha(params, lora, n_heads=4, alpha=6.0)
    a = Architecture(n_layers=1, d_model=24, n_heads=4, context=5)
    assert lora_params(a, 3, ("q", "v")).value == model.get_nb_trainable_parameters()[0] == count_trainable(model)


# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    (dict(n_layers=-1, d_model=8, n_heads=2, context=4), "n_layers: expected a positive integer, got -1"),
    (dict(n_layers=2, d_model=10, n_heads=3, context=4), "n_heads: expected a divisor of d_model=10, got 3"),
    (dict(n_layers=2, d_model=8, n_heads=2, context=0), "context: expected a positive integer, got 0"),
    (dict(n_layers=2, d_model=8, n_heads=2, context=4, vocab_size=-5), "vocab_size: expected a positive integer"),
    (dict(n_layers=2, d_model=8, n_heads=2, context=4, positions="alibi"), "positions: expected one of learned"),
    (dict(n_layers=2, d_model=8, n_heads=2, context=9, n_positions=8), "n_positions: expected at least context=9"),
    (dict(n_layers=2, d_model=8, n_heads=4, n_kv_heads=3, context=4), "n_kv_heads: expected a divisor of n_heads=4"),
    (dict(n_layers=2, d_model=8, n_heads=4, n_kv_heads=0, context=4), "n_kv_heads: expected a positive integer"),
    (dict(n_layers=2, d_model=8, n_heads=3, head_dim=0, context=4), "head_dim: expected a positive integer, got 0"),
    (dict(n_layers=2, d_model=12, n_heads=4, context=4, positions="rope"), "head_dim: expected an even head size"),
    (dict(n_layers=2, d_model=8, n_heads=2, context=4, ffn="relu"), "ffn: expected one of gelu, swiglu, got 'relu'"),
    (dict(n_layers=2, d_model=8, n_heads=2, context=4, norm="batch"), "norm: expected one of layernorm, rmsnorm"),
    (dict(n_layers=2, d_model=8, n_heads=2, context=4, kind="encoder", ffn="swiglu"),
     "ffn: expected only with kind='decoder', got ffn='swiglu' for an encoder"),
    (dict(n_layers=2, d_model=8, n_heads=2, context=4, kind="encoder", n_kv_heads=1),
     "n_kv_heads: expected only with kind='decoder'"),
])
def test_bad_architecture_is_an_input_error(kwargs, fragment):
    with pytest.raises(InputError) as e:
        Architecture(**kwargs)
    assert fragment in str(e.value)


def test_lora_rank_larger_than_the_matrix_is_an_input_error():
    a = Architecture(n_layers=1, d_model=8, n_heads=2, context=4, d_ff=6)
    with pytest.raises(InputError, match=r"rank: expected a rank <= min\(d_in, d_out\) = 6 for a \(6, 8\) matrix, got 7"):
        lora_params(a, 7, ("ffn_in",))
    with pytest.raises(InputError, match="targets: expected distinct names"):
        lora_params(a, 2, ("q", "gate"))
    with pytest.raises(InputError, match="rank: expected a positive integer, got 0"):
        lora_params_for_matrix(4, 4, 0)
