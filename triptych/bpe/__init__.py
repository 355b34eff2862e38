"""Byte-level BPE from scratch (GPT-2, Llama 3, SmolLM2, Qwen), pure Python + `regex`.

    from triptych.bpe import Tokenizer, train
    vocab, merges = train("corpus.txt", vocab_size=10_000, special_tokens=["<|endoftext|>"])
    tok = Tokenizer(vocab, merges, special_tokens=["<|endoftext|>"])
    tok.decode(tok.encode("It is a truth universally acknowledged")) == "It is a truth universally acknowledged"

Reading order: pretokenize.py (special tokens, then the GPT-2 regex), train.py (the merge loop and
its pair index), tokenizer.py (encode, decode, streaming), formats.py (vocab.json + merges.txt,
tokenizer.json, GGUF; the byte-to-printable mapping, explained once), bench.py (speed vs `tokenizers`).
"""
from triptych.bpe.formats import bytes_to_unicode
from triptych.bpe.pretokenize import GPT2_PATTERN
from triptych.bpe.tokenizer import Tokenizer
from triptych.bpe.train import Training, train, train_on_texts

__all__ = ["GPT2_PATTERN", "Tokenizer", "Training", "bytes_to_unicode", "train", "train_on_texts"]
