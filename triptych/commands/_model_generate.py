"""`python cli.py model generate "prompt"`: SmolLM2-135M-Instruct writes text through our own engine.

    model generate "The capital of France is"                greedy, NumPy engine, 64 new tokens at most
    model generate --chat "Write a haiku about tea"           the prompt in the model's chat template
    model generate --temperature 0.7 --top-p 0.9 --seed 1 .. a seeded sample (HF's warpers' semantics)
    model generate --backend jax | torch ...                  our JAX engine, or Hugging Face's LlamaForCausalLM
    model generate --check-hf ...                             (greedy) the same prompt through HF's own generate,
                                                              loaded from the GGUF by HF: identical tokens, or
                                                              the first that differs (exit 1)

The text streams as it is made (never half a UTF-8 character: generation.generate.TextStream); the
last line gives the prompt's length, the prefill and decode rates and why it stopped (end of
sequence, --max-new-tokens, or Ctrl-C, which keeps what was written). --tokenizer ours (bpe/, the
default) and hf (transformers' own) give the same ids (tests/test_generate.py); --json prints ids,
text (without the end-of-sequence token; ids keep it) and timings instead.
"""
from __future__ import annotations

import sys
import time

from triptych.common.argtypes import SEED, count, nonneg_number, number, text
from triptych.common.console import CLIError


def register_actions(msub) -> None:
    """Adds `generate` under `model` (triptych/commands/model.py calls this; the leading underscore keeps
    cli.py from registering this module as a command of its own)."""
    s = msub.add_parser("generate", help="SmolLM2 writes text by our NumPy / JAX engine (or HF torch), streamed")
    s.add_argument("prompt", type=text, help="the prompt (quote it); with --chat, the user's message")
    s.add_argument("--model", choices=["smollm2"], default="smollm2")
    s.add_argument("--backend", choices=["numpy", "jax", "torch"], default="numpy",
                   help="numpy / jax: our engines with their KV caches; torch: HF LlamaForCausalLM (default numpy)")
    s.add_argument("--max-new-tokens", type=count(8192, why="SmolLM2 has 8,192 positions"), default=64, help="at most this many new tokens (default 64)")
    s.add_argument("--temperature", type=nonneg_number(), default=0.0,
                   help="0 (default): greedy, the most likely token each time; > 0: sample")
    s.add_argument("--top-k", type=count(), default=None, help="sample among the k most likely tokens only")
    s.add_argument("--top-p", type=number(0, 1), default=None, help="sample among the most likely tokens that reach p")
    s.add_argument("--seed", type=SEED, default=0, help="the sampling seed (default 0)")
    s.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    s.add_argument("--system", type=text, default=None, help="with --chat: a system message (else the template's default)")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    s.add_argument("--tokenizer", choices=["ours", "hf"], default="ours",
                   help="ours: bpe/ from the GGUF (default); hf: transformers' tokenizer")
    s.add_argument("--ignore-eos", action="store_true", help="keep going past the end-of-sequence token")
    s.add_argument("--check-hf", action="store_true",
                   help="greedy only: run HF's generate on the same prompt and compare the tokens")
    s.add_argument("--json", action="store_true", help="print a JSON object instead of streaming")
    s.set_defaults(func=run_generate)


class _Text:
    """The two tokenizers behind one face: encode, decode, chat prompt."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "hf":
            from triptych.bpe.smollm2 import hf_tokenizer

            self.tok = hf_tokenizer()
        else:
            from triptych.bpe.tokenizer import Tokenizer
            from triptych.pretrained.smollm2 import gguf_path

            self.tok = Tokenizer.from_gguf(gguf_path())

    def encode(self, text: str) -> list[int]:
        # Special tokens written in the text (<|im_start|>) are encoded as themselves by both.
        return self.tok.encode(text, add_special_tokens=False) if self.kind == "hf" else self.tok.encode(text)

    def decode(self, ids) -> str:
        return self.tok.decode(ids, skip_special_tokens=False) if self.kind == "hf" else self.tok.decode(ids)

    def chat(self, messages: list[dict]) -> str:
        if self.kind == "hf":
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        from triptych.bpe.formats import gguf_chat_template
        from triptych.generation.chat import render_chat
        from triptych.pretrained.smollm2 import gguf_path

        return render_chat(gguf_chat_template(gguf_path()), messages)


def _sampling(args):
    from triptych.generation.generate import Sampling

    # Sampling's own checks say what is wrong, naming the setting; the CLI prints them as one line.
    return Sampling(args.temperature, args.top_k, args.top_p, args.seed)


def _check_flags(args, sampling) -> None:
    """Flags that only make sense together, checked before anything is loaded."""
    if args.check_hf and not sampling.greedy:
        raise CLIError(f"--check-hf: expected greedy decoding (--temperature 0) to compare tokens, got --temperature "
                       f"{args.temperature:g} (samples differ by RNG, not by maths)")
    if args.system is not None and not args.chat:
        raise CLIError("--system: expected --chat with it (a system message belongs to a chat prompt)")


def _prompt_text(args, text) -> str:
    """The prompt as given, or wrapped in the chat template (with the --system message first)."""
    if not args.chat:
        return args.prompt
    messages = ([{"role": "system", "content": args.system}] if args.system is not None else [])
    return text.chat(messages + [{"role": "user", "content": args.prompt}])


def _load_engine(args, n_prompt: int):
    """SmolLM2's weights in the chosen backend, with room for the prompt and the new tokens."""
    from triptych.generation.engines import make_engine
    from triptych.pretrained import smollm2

    params, config = smollm2.load_llama(dtype=args.dtype)
    total = n_prompt + args.max_new_tokens
    if total > config.block_size:
        raise CLIError(f"--max-new-tokens: expected prompt + new tokens <= the model's {config.block_size} positions, "
                       f"got {n_prompt} + {args.max_new_tokens} = {total}")
    return make_engine(args.backend, params, config, dtype=args.dtype, max_len=total)


def _printer(stream, eos, prompt_text: str, chat: bool):
    """on_token for generate(): prints the prompt (unless chat) now, then each token's text as it comes."""
    sys.stdout.write(prompt_text if not chat else "")
    sys.stdout.flush()

    def on_token(token):
        if token not in eos:  # the end-of-sequence token ends the text; it is not part of it
            sys.stdout.write(stream.push(token))
            sys.stdout.flush()

    return on_token


def _result(args, engine, sampling, prompt_text: str, prompt_ids, out, new_text: str, load_s: float) -> dict:
    """What --json prints (and the summary reads)."""
    return {
        "model": "SmolLM2-135M-Instruct", "backend": engine.name, "dtype": args.dtype, "tokenizer": args.tokenizer,
        "sampling": {"temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
                     "seed": sampling.seed},
        "prompt": prompt_text, "prompt_ids": prompt_ids, "ids": out.ids, "text": new_text, "stop": out.stop,
        "seconds": {"load": round(load_s, 3), "prefill": round(out.prefill_s, 4), "decode": round(out.decode_s, 4)},
        "tokens_per_s": {"prefill": round(out.prefill_tokens_per_s, 2), "decode": round(out.decode_tokens_per_s, 2)},
    }


def run_generate(args) -> int:
    from triptych.common.checks import check_positive_int
    from triptych.generation.generate import TextStream, generate
    from triptych.pretrained import smollm2

    if not args.prompt.strip():
        raise CLIError("model generate: expected a non-empty prompt, got an empty one")
    check_positive_int("--max-new-tokens", args.max_new_tokens)
    sampling = _sampling(args)
    _check_flags(args, sampling)

    t_load = time.perf_counter()
    text = _Text(args.tokenizer)
    prompt_text = _prompt_text(args, text)
    prompt_ids = text.encode(prompt_text)
    engine = _load_engine(args, len(prompt_ids))
    eos = [] if args.ignore_eos else [smollm2.model_config().eos_token_id]
    load_s = time.perf_counter() - t_load

    stream = TextStream(text.decode)
    on_token = None if args.json else _printer(stream, eos, prompt_text, args.chat)
    out = generate(engine, prompt_ids, args.max_new_tokens, sampling, eos, on_token)
    new_text = text.decode(out.ids[:-1] if out.stop == "eos" else out.ids)
    result = _result(args, engine, sampling, prompt_text, prompt_ids, out, new_text, load_s)
    code = 130 if out.stop == "interrupted" else 0
    if not args.json:  # the text ends (its last characters, a newline) before anything else is printed
        sys.stdout.write(stream.flush() + "\n")
        sys.stdout.flush()
    if args.check_hf and out.stop != "interrupted":
        result["hf"] = _check_hf(prompt_ids, out.ids, args.dtype, eos)
        code = code or (0 if result["hf"]["identical"] else 1)
    if args.json:
        from triptych.common.console import print_json

        print_json(result)
        return code
    _summary(result, out)
    return code


def _check_hf(prompt_ids, ours, dtype, eos) -> dict:
    """HF's generate(do_sample=False) on HF's own load of the GGUF (pretrained.smollm2.hf_model), as
    many tokens as we made: identical, or the first position where they part."""
    import torch
    from transformers.utils import logging

    from triptych.pretrained import smollm2

    logging.disable_progress_bar()  # HF's dequantizing bars would scroll the answer away
    model = smollm2.hf_model(dtype)
    with torch.inference_mode():
        ids = model.generate(torch.tensor([prompt_ids]), max_new_tokens=len(ours), do_sample=False,
                             eos_token_id=eos or None, pad_token_id=model.config.eos_token_id,
                             top_k=None, top_p=None, temperature=None)[0, len(prompt_ids):].tolist()
    first = next((i for i, (a, b) in enumerate(zip(ours, ids)) if a != b), None)
    if first is None and len(ids) != len(ours):
        first = min(len(ids), len(ours))
    return {"identical": first is None, "ids": ids, "first_difference": first}


def _summary(result: dict, out) -> None:
    from triptych.common.console import console

    why = {"eos": "end of sequence", "max_new_tokens": "--max-new-tokens reached",
           "interrupted": "interrupted (Ctrl-C): the text above is what was made"}[out.stop]
    rates = result["tokens_per_s"]
    console.print(f"[dim]{len(out.ids)} new tokens ({why}); prompt {len(out.prompt_ids)} tokens, prefill "
                  f"{rates['prefill']:.0f} tok/s, decode {rates['decode']:.1f} tok/s; {result['backend']}, "
                  f"{result['dtype']}, tokenizer {result['tokenizer']}; load {result['seconds']['load']:.1f} s[/dim]",
                  highlight=False)
    hf = result.get("hf")
    if hf is not None:
        if hf["identical"]:
            console.print(f"[green]identical to Hugging Face generate[/green] ({len(out.ids)} tokens, greedy)")
        else:
            i = hf["first_difference"]
            theirs = hf["ids"][i] if i < len(hf["ids"]) else "(ended)"
            mine = out.ids[i] if i < len(out.ids) else "(ended)"
            console.print(f"[red]differs from Hugging Face generate[/red] at new token {i}: ours {mine}, HF {theirs}")
