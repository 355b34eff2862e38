"""triptych.generation.generate, generation.chat and `model generate`: the inverse-CDF draw against the
distribution it draws from; seeded sampling by the numpy / jax / torch engines equal to drawing from
Hugging Face's own warped probabilities at every step; end of sequence, max_new_tokens and Ctrl-C;
streaming that never shows half a character; the chat prompt equal to HF's apply_chat_template; the
CLI's greedy text identical to HF generate, and its one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on before any JAX array)
from triptych.common.checks import InputError
from triptych.generation.engines import make_engine
from triptych.generation.generate import Sampling, TextStream, draw, generate

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the draw
def test_draw_inverts_the_cumulative_distribution():
    probs = np.array([0.2, 0.0, 0.5, 0.3])  # cumulative 0.2, 0.2, 0.7, 1.0
    assert [draw(probs, u) for u in (0.0, 0.19, 0.2, 0.69, 0.7, 0.999999)] == [0, 0, 2, 2, 3, 3]
    # On an even grid of u the draws reproduce the distribution to the grid's resolution, and the
    # zero-probability token never comes.
    n = 10_000
    counts = np.bincount([draw(probs, (i + 0.5) / n) for i in range(n)], minlength=4)
    np.testing.assert_allclose(counts / n, probs, atol=1 / n)
    # float32 rows that sum to 1 - 1e-7 still map all of [0, 1) onto tokens.
    assert draw(np.array([0.5, 0.4999999], dtype=np.float32), 0.99999999) == 1


def test_sampling_settings_are_checked_by_name():
    with pytest.raises(InputError, match="top_k: expected temperature > 0"):
        Sampling(0.0, top_k=5)
    with pytest.raises(InputError, match="top_p: expected a number in"):
        Sampling(0.7, top_p=2.0)
    with pytest.raises(InputError, match="temperature: expected a finite number > 0"):
        Sampling(-0.5)
    with pytest.raises(InputError, match="seed: expected a non-negative integer"):
        Sampling(0.7, seed=-1)


# ---------------------------------------------------------------- SmolLM2 cut to 2 layers
@pytest.fixture(scope="module")
def smollm2_2(smollm2_two_layers):
    params, config = smollm2_two_layers
    from triptych.bpe.smollm2 import gguf_path
    from triptych.bpe.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(gguf_path())
    ids = tok.encode("It is a truth universally acknowledged, that a single man")
    return params, config, ids, tok


def _hf_probs_each_step(params, config, prompt, new, sampling):
    """Hugging Face's own distribution before each new token: LlamaForCausalLM on the whole sequence
    so far (no cache), its last logits through HF's warpers (torch_ref.sampling)."""
    from torch_ref.llama import hf_model
    from torch_ref.sampling import sampling_probs

    hf = hf_model(params, config, torch.float64, "sdpa", exact_float64=True)
    out = []
    with torch.inference_mode():
        for t in range(len(new)):
            logits = hf(torch.tensor([prompt + new[:t]])).logits[0, -1]
            out.append(sampling_probs(logits, sampling.temperature, sampling.top_k, sampling.top_p).numpy())
    return out


def test_seeded_samples_are_draws_from_hf_warped_probabilities(smollm2_2):
    params, config, prompt, _ = smollm2_2
    sampling = Sampling(temperature=0.9, top_k=50, top_p=0.9, seed=3)
    runs = {}
    for backend in ("numpy", "jax", "torch"):
        engine = make_engine(backend, params, config, dtype="float64", max_len=len(prompt) + 20)
        runs[backend] = generate(engine, prompt, 20, sampling).ids
    assert runs["numpy"] == runs["jax"] == runs["torch"], runs
    new = runs["numpy"]
    assert len(set(new)) > 5  # a real sample, not one token repeated
    # Each token is what the same uniforms pick from HF's distribution at that step.
    rng = np.random.default_rng(sampling.seed)
    for t, p in enumerate(_hf_probs_each_step(params, config, prompt, new, sampling)):
        assert p[new[t]] > 0, f"token {t} has probability 0 under HF's warpers"
        assert draw(p, rng.random()) == new[t], f"token {t}"


def test_greedy_stops_at_eos_and_at_max_new_tokens(smollm2_2):
    params, config, prompt, _ = smollm2_2
    engine = make_engine("numpy", params, config, dtype="float64", max_len=len(prompt) + 12)
    full = generate(engine, prompt, 12)
    assert full.stop == "max_new_tokens" and len(full.ids) == 12 and full.steps == 11
    # Calling the 4th token the end of sequence stops right after it (it is kept in ids).
    cut = generate(engine, prompt, 12, eos_ids=[full.ids[3]], on_token=None)
    first = full.ids.index(full.ids[3])
    assert cut.stop == "eos" and cut.ids == full.ids[:first + 1]
    seen = []
    generate(engine, prompt, 5, on_token=seen.append)
    assert seen == full.ids[:5]


class _Interrupted:
    """An engine that is stopped by Ctrl-C during its third step."""
    name = "numpy"

    def __init__(self):
        self.calls = 0

    def prefill(self, ids):
        return np.eye(10)[1]

    def step(self, token):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return np.eye(10)[(token + 1) % 10]


def test_ctrl_c_keeps_what_was_made():
    out = generate(_Interrupted(), [0], 10)
    assert out.stop == "interrupted" and out.ids == [1, 2, 3]
    with pytest.raises(InputError, match="max_new_tokens: expected a positive integer, got 0"):
        generate(_Interrupted(), [0], 0)
    with pytest.raises(InputError, match="prompt_ids: expected at least one token"):
        generate(_Interrupted(), [], 3)


# ---------------------------------------------------------------- streaming and chat
def test_stream_never_shows_half_a_character(smollm2_2):
    tok = smollm2_2[3]
    text = "Tea 🍵 and 日本語, naïve café 🤗!"
    ids = tok.encode(text)
    stream = TextStream(tok.decode)
    pieces = [stream.push(t) for t in ids]
    assert "".join(pieces) + stream.flush() == text
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # some token did end inside a character: the case being tested
    assert len(ids) > len([p for p in pieces if p])


CONVERSATIONS = [
    [{"role": "user", "content": "Write a haiku about tea."}],
    [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "And 日本 times 🤗?"}],
]


@pytest.fixture(scope="module")
def chat_template(smollm2_2):
    from triptych.bpe.formats import gguf_chat_template
    from triptych.bpe.smollm2 import gguf_path

    return gguf_chat_template(gguf_path())


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["user", "system", "multi-turn"])
def test_chat_prompt_equals_hf_apply_chat_template(smollm2_2, chat_template, messages):
    from triptych.bpe.smollm2 import hf_tokenizer
    from triptych.generation.chat import render_chat

    tok = smollm2_2[3]
    hf = _hf_tokenizer(hf_tokenizer)
    ours = render_chat(chat_template, messages)
    ref = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == ref
    assert ours.endswith("<|im_start|>assistant\n")
    assert tok.encode(ours) == list(hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                           return_dict=False))


_HF_TOKENIZER = []


def _hf_tokenizer(make):
    if not _HF_TOKENIZER:
        _HF_TOKENIZER.append(make())
    return _HF_TOKENIZER[0]


def test_render_chat_refuses_malformed_messages():
    from triptych.generation.chat import render_chat

    with pytest.raises(InputError, match="messages: expected a non-empty list"):
        render_chat("{{ messages }}", [{"role": "user"}])
    with pytest.raises(InputError, match="messages: the chat template refused them: no system"):
        render_chat("{{ raise_exception('no system') }}", [{"role": "user", "content": "x"}])


# ---------------------------------------------------------------- the CLI
def _cli(*args, timeout=600):
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "model", "generate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_greedy_text_is_identical_to_hf_generate():
    r = _cli("It is a truth universally acknowledged", "--max-new-tokens", "24", "--check-hf", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # HF's side is HF's own GGUF load and generate(do_sample=False): the ids themselves must agree.
    assert out["ids"] == out["hf"]["ids"] and len(out["ids"]) == 24 and out["hf"]["identical"]
    assert out["stop"] == "max_new_tokens" and out["tokens_per_s"]["decode"] > 0
    from triptych.bpe.smollm2 import hf_tokenizer

    hf = _hf_tokenizer(hf_tokenizer)
    assert out["prompt_ids"] == hf.encode("It is a truth universally acknowledged", add_special_tokens=False)
    assert out["text"] == hf.decode(out["ids"])


def test_cli_chat_streams_and_both_tokenizers_agree():
    from triptych.bpe.smollm2 import hf_tokenizer

    args = ("--chat", "What is the capital of France?", "--max-new-tokens", "16", "--backend", "jax")
    ours = json.loads(_cli(*args, "--json").stdout)
    theirs = json.loads(_cli(*args, "--json", "--tokenizer", "hf").stdout)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ref = list(_hf_tokenizer(hf_tokenizer).apply_chat_template(messages, add_generation_prompt=True,
                                                               return_dict=False))
    assert ours["prompt_ids"] == theirs["prompt_ids"] == ref
    assert ours["ids"] == theirs["ids"] and ours["text"] == theirs["text"]
    assert "Paris" in ours["text"]
    streamed = _cli(*args)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.startswith(ours["text"]) and "<|im_end|>" not in streamed.stdout
    assert "new tokens" in streamed.stdout and "decode" in streamed.stdout


def test_numpy_backend_with_our_tokenizer_runs_no_hugging_face_or_torch_code():
    # The bpe issue's promise: the GGUF read by `gguf`, our tokenizer, our NumPy engine, our sampler.
    # A fresh process, since this one has imported torch and transformers for the references.
    code = ("import sys\nfrom cli import main\n"
            "rc = main(['model', 'generate', 'The capital of France is', '--max-new-tokens', '4', '--json'])\n"
            "used = {m.split('.')[0] for m in sys.modules}\n"
            "print('MODULES', sorted(used & {'torch', 'transformers', 'tokenizers', 'huggingface_hub', 'jax'}))\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, COLUMNS="120"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "MODULES []"
    assert json.loads(r.stdout[:r.stdout.rindex("MODULES")])["ids"]  # it did generate


@pytest.mark.parametrize("args,message", [
    (("",), "argument prompt: expected non-empty text, got ''"),
    (("hi", "--max-new-tokens", "0"), "--max-new-tokens: expected a positive integer, got '0'"),
    (("hi", "--temperature", "-1"), "--temperature: expected a non-negative number, got '-1'"),
    (("hi", "--top-k", "5"), "top_k: expected temperature > 0"),
    (("hi", "--temperature", "0.7", "--top-p", "1.5"), "--top-p: expected a number in (0, 1], got '1.5'"),
    (("hi", "--temperature", "0.7", "--check-hf"), "--check-hf: expected greedy decoding"),
    (("hi", "--system", "be brief"), "--system: expected --chat"),
    (("hi", "--max-new-tokens", "9000"), "--max-new-tokens: expected a positive integer up to 8,192"),
    (("hi " * 300, "--max-new-tokens", "8000"), "expected prompt + new tokens <= the model's 8192 positions"),
])
def test_cli_errors_are_one_line_exit_2(args, message):
    r = _cli(*args, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
