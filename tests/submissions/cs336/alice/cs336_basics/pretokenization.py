import regex as re

# GPT-2's pre-tokenizer pattern
PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def split_on_special(text: str, special_tokens: list[str] | None, keep: bool = False) -> list[str]:
    """Split text around special tokens (longest first, so overlapping ones resolve to the longer)."""
    if not special_tokens:
        return [text]
    ordered = sorted(special_tokens, key=len, reverse=True)
    pattern = "|".join(re.escape(tok) for tok in ordered)
    if keep:
        pattern = f"({pattern})"
    return [part for part in re.split(pattern, text) if part]


def pretokenize(text: str):
    for match in re.finditer(PAT, text):
        yield match.group()
