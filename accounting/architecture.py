"""Parameter counts of a transformer from its description, component by component.

The model the formulas describe (each assumption is checked against a real torch model in
tests/test_calc_params.py):

    embeddings   token table V*d; learned positions P*d (sinusoidal / RoPE / none: no parameters);
                 optional segment (token-type) table types*d, as BERT (2) and RoBERTa (1) have
    attention    per layer W_q, W_k, W_v, W_o, each d x d, plus a bias of d each when bias=True:
                 4 d^2 + 4 d (heads only cut d into slices, they add no parameters)
    FFN          per layer d -> d_ff -> d: 2 d d_ff + d_ff + d (the two biases when bias=True)
    norms        LayerNorm, weight d plus bias d when bias=True (torch's LayerNorm(bias=...)):
                 two per layer, plus one more: on the embeddings (encoder, BERT-style post-LN)
                 or after the last layer (decoder, GPT-2-style pre-LN, ln_f)
    head         decoder: LM head V*d, or 0 when tied to the token embedding (no head bias,
                 as GPT-2 / nanoGPT / Llama); encoder: none (a bare encoder)
    pooler       encoder only, optional: d x d + d (BERT's [CLS] pooler)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from accounting.quantity import Quantity, fmt_int
from common.checks import InputError

POSITIONS = ("learned", "sinusoidal", "rope", "none")
KINDS = ("decoder", "encoder")


def check_size(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        want = "a non-negative integer" if allow_zero else "a positive integer"
        raise InputError(f"{name}: expected {want}, got {value!r}")


@dataclass(frozen=True)
class Architecture:
    n_layers: int
    d_model: int
    n_heads: int
    context: int                   # tokens per sequence (the side of the attention score matrix)
    vocab_size: int | None = None  # None: embeddings, head and total are not computed
    d_ff: int | None = None        # FFN inner size; None -> ffn_mult * d_model
    ffn_mult: int = 4
    positions: str = "learned"
    n_positions: int | None = None  # rows of the learned position table; None -> context
    bias: bool = True               # biases on every Linear and LayerNorm
    tied_embeddings: bool = True    # decoder: LM head shares the token embedding
    kind: str = "decoder"
    token_types: int = 0            # segment-embedding rows (BERT 2, RoBERTa 1, GPT 0)
    pooler: bool = False            # encoder only
    name: str = field(default="", compare=False)

    def __post_init__(self):
        for n in ("n_layers", "d_model", "n_heads", "context", "ffn_mult"):
            check_size(n, getattr(self, n))
        if self.d_model % self.n_heads:
            raise InputError(f"n_heads: expected a divisor of d_model={self.d_model}, got {self.n_heads}")
        if self.vocab_size is not None:
            check_size("vocab_size", self.vocab_size)
        if self.d_ff is not None:
            check_size("d_ff", self.d_ff)
        if self.n_positions is not None:
            check_size("n_positions", self.n_positions)
        check_size("token_types", self.token_types, allow_zero=True)
        if self.positions not in POSITIONS:
            raise InputError(f"positions: expected one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.kind not in KINDS:
            raise InputError(f"kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.pooler and self.kind != "encoder":
            raise InputError("pooler: expected only with kind='encoder', got pooler=True for a decoder")
        if self.positions == "learned" and self.positions_rows < self.context:
            raise InputError(f"n_positions: expected at least context={self.context} learned positions, "
                             f"got {self.positions_rows}")

    @property
    def ffn_inner(self) -> int:
        return self.d_ff if self.d_ff is not None else self.ffn_mult * self.d_model

    @property
    def positions_rows(self) -> int:
        return self.n_positions if self.n_positions is not None else self.context

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def matrix_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_out, d_in) of every per-layer weight matrix LoRA could adapt."""
        d, f = self.d_model, self.ffn_inner
        return {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d), "ffn_in": (f, d), "ffn_out": (d, f)}

    def describe(self) -> str:
        ffn = f"d_ff={self.d_ff}" if self.d_ff is not None else f"d_ff={self.ffn_mult}*d={self.ffn_inner}"
        text = (f"{self.kind}: L={self.n_layers}, d={self.d_model}, h={self.n_heads} (d_head={self.d_head}), "
                f"T={self.context}, {ffn}, bias={'on' if self.bias else 'off'}")
        if self.vocab_size is None:  # positions and the head only matter for the embedding/head counts
            return text + ", vocabulary not given (no embedding, head or total counts)"
        pos = f"{self.positions_rows} learned positions" if self.positions == "learned" else f"{self.positions} positions"
        return (text + f", V={self.vocab_size}, {pos}"
                + (f", {'tied' if self.tied_embeddings else 'untied'} LM head" if self.kind == "decoder" else "")
                + (f", {self.token_types} token types" if self.token_types else "")
                + (", pooler" if self.pooler else ""))


def attention_params_per_layer(a: Architecture) -> Quantity:
    d = a.d_model
    n = 4 * d * d + (4 * d if a.bias else 0)
    f = f"4 d^2{' + 4 d' if a.bias else ''} = 4*{d}^2{f' + 4*{d}' if a.bias else ''} = {fmt_int(n)}"
    return Quantity("attention_params_per_layer", "attention (W_q, W_k, W_v, W_o) per layer", n, "params", f)


def ffn_params_per_layer(a: Architecture) -> Quantity:
    d, ff = a.d_model, a.ffn_inner
    n = 2 * d * ff + ((ff + d) if a.bias else 0)
    f = (f"2 d d_ff{' + d_ff + d' if a.bias else ''} = 2*{d}*{ff}{f' + {ff} + {d}' if a.bias else ''} = {fmt_int(n)}")
    return Quantity("ffn_params_per_layer", f"FFN ({d} -> {ff} -> {d}) per layer", n, "params", f)


def _norm_size(a: Architecture) -> int:
    return 2 * a.d_model if a.bias else a.d_model


def count_parameters(a: Architecture) -> list[Quantity]:
    """Per component and in total; embeddings, head and total only when vocab_size is known."""
    L, d = a.n_layers, a.d_model
    out: list[Quantity] = []
    att, ffn = attention_params_per_layer(a), ffn_params_per_layer(a)
    ln = _norm_size(a)
    ln_txt = "2d" if a.bias else "d"
    extra_norm = "embedding LayerNorm" if a.kind == "encoder" else "final LayerNorm"
    norms = (2 * L + 1) * ln

    if a.vocab_size is not None:
        V = a.vocab_size
        parts, total_emb = [f"V d = {fmt_int(V)}*{d}"], V * d
        if a.positions == "learned":
            parts.append(f"P d = {a.positions_rows}*{d}")
            total_emb += a.positions_rows * d
        if a.token_types:
            parts.append(f"types d = {a.token_types}*{d}")
            total_emb += a.token_types * d
        out.append(Quantity("embedding_params", "embeddings (tokens" + (", positions" if a.positions == "learned" else "")
                            + (", token types" if a.token_types else "") + ")", total_emb, "params",
                            " + ".join(parts) + f" = {fmt_int(total_emb)}"
                            + ("" if a.positions == "learned" else f" ({a.positions} positions have no parameters)")))
    out.append(att)
    out.append(Quantity("attention_params", "attention, all layers", L * att.value, "params",
                        f"L * {fmt_int(att.value)} = {L}*{fmt_int(att.value)} = {fmt_int(L * att.value)}"))
    out.append(ffn)
    out.append(Quantity("ffn_params", "FFN, all layers", L * ffn.value, "params",
                        f"L * {fmt_int(ffn.value)} = {L}*{fmt_int(ffn.value)} = {fmt_int(L * ffn.value)}"))
    out.append(Quantity("norm_params", f"LayerNorms (2 per layer + {extra_norm})", norms, "params",
                        f"(2 L + 1) * {ln_txt} = (2*{L} + 1)*{ln} = {fmt_int(norms)}"))
    total_known = L * att.value + L * ffn.value + norms
    if a.kind == "encoder" and a.pooler:
        pool = d * d + (d if a.bias else 0)
        out.append(Quantity("pooler_params", "pooler (d x d dense on [CLS])", pool, "params",
                            f"d^2{' + d' if a.bias else ''} = {d}^2{f' + {d}' if a.bias else ''} = {fmt_int(pool)}"))
        total_known += pool
    if a.vocab_size is not None:
        V = a.vocab_size
        if a.kind == "decoder":
            head = 0 if a.tied_embeddings else V * d
            f = ("tied to the token embedding: 0 new parameters" if a.tied_embeddings
                 else f"V d = {fmt_int(V)}*{d} = {fmt_int(head)} (no bias)")
        else:
            head, f = 0, "a bare encoder has no output head"
        out.append(Quantity("head_params", "output head", head, "params", f))
        total = total_known + out[0].value + head
        terms = " + ".join(fmt_int(q.value) for q in out if q.key in (
            "embedding_params", "attention_params", "ffn_params", "norm_params", "pooler_params", "head_params"))
        out.append(Quantity("total_params", "total trainable parameters", total, "params", f"{terms} = {fmt_int(total)}"))
    return out
