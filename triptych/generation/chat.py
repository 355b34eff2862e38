"""Chat prompts: a list of messages rendered through the model's own chat template.

A chat model was fine-tuned on conversations laid out in one exact format (SmolLM2 uses ChatML:
<|im_start|>role\\ncontent<|im_end|>\\n, with a default system message), and answers well only when
prompted in it. The format ships with the model as a Jinja template (the GGUF's
tokenizer.chat_template); this renders it in the environment Hugging Face's apply_chat_template
uses (sandboxed, trim_blocks and lstrip_blocks, loop controls), so the prompt is the same string,
which tests/test_generate.py checks.
"""
from __future__ import annotations

import json

from triptych.common.checks import InputError

__all__ = ["render_chat"]


def _raise(message):
    raise InputError(f"messages: the chat template refused them: {message}")


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, **variables) -> str:
    """messages [{"role": "system" | "user" | "assistant", "content": str}, ...] -> the prompt text;
    add_generation_prompt ends it with the assistant's header, so the model writes the reply.
    variables: what else the template reads (bos_token, eos_token, ...)."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise InputError(f"messages: expected a non-empty list of {{'role': str, 'content': str}}, got {messages!r}")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = _raise
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            **variables)
