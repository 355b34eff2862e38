"""Parameter counts of a transformer from its description, component by component.

The model the formulas describe (each assumption is checked against a real torch model and the
Hugging Face model of the same family in tests/test_calc_params.py and tests/test_calc_real_models.py):

    embeddings   token table V*d; learned positions P*d (sinusoidal / RoPE / none: no parameters);
                 optional segment (token-type) table types*d, as BERT (2) and RoBERTa (1) have
    attention    per layer W_q d x (h d_head), W_k and W_v d x (h_kv d_head), W_o (h d_head) x d:
                 2 d h d_head + 2 d h_kv d_head. With h_kv = h and h d_head = d (GPT-2) this is 4 d^2.
                 h_kv < h is grouped-query attention (Llama 3, Mistral; 1 = multi-query); h d_head may
                 differ from d (Gemma: 16 x 256 on d = 3072). Biases: h d_head + 2 h_kv d_head on
                 q, k, v when qkv_bias (default: bias), d on W_o when bias (Qwen2: q, k, v only)
    FFN          per layer, gelu: d -> d_ff -> d, 2 d d_ff (+ d_ff + d biases);
                 swiglu: gate and up d -> d_ff, down d_ff -> d, 3 d d_ff (+ 2 d_ff + d biases);
                 a GeGLU FFN (Gemma) has the same three matrices
    norms        LayerNorm: weight d plus bias d when bias=True; RMSNorm: weight d only.
                 Two per layer, plus one more: on the embeddings (encoder, BERT-style post-LN)
                 or after the last layer (decoder, GPT-2 / Llama-style pre-norm, the final norm)
    head         decoder: LM head V*d, or 0 when tied to the token embedding (no head bias,
                 as GPT-2 / nanoGPT / Llama); encoder: none (a bare encoder)
    pooler       encoder only, optional: d x d + d (BERT's [CLS] pooler)

Grouped-query attention, d_head != d / h, SwiGLU and RMSNorm are decoder options (the encoder
reference, nn.TransformerEncoderLayer, has none of them).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from triptych.calculators.quantity import Quantity, fmt_int
from triptych.common.checks import InputError

POSITIONS = ("learned", "sinusoidal", "rope", "none")
KINDS = ("decoder", "encoder")
FFNS = ("gelu", "swiglu")
NORMS = ("layernorm", "rmsnorm")


def check_size(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        want = "a non-negative integer" if allow_zero else "a positive integer"
        raise InputError(f"{name}: expected {want}, got {value!r}")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


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
    n_kv_heads: int | None = None   # key/value heads (grouped-query attention); None -> n_heads
    head_dim: int | None = None     # size of one head; None -> d_model // n_heads
    ffn: str = "gelu"               # "gelu": two matrices; "swiglu": gate, up and down
    norm: str = "layernorm"         # "rmsnorm": a weight and no bias
    qkv_bias: bool | None = None    # biases on W_q, W_k, W_v; None -> bias (Qwen2: True with bias=False)
    name: str = field(default="", compare=False)

    def __post_init__(self):
        for n in ("n_layers", "d_model", "n_heads", "context", "ffn_mult"):
            check_size(n, getattr(self, n))
        if self.head_dim is not None:
            check_size("head_dim", self.head_dim)
        elif self.d_model % self.n_heads:
            raise InputError(f"n_heads: expected a divisor of d_model={self.d_model}, got {self.n_heads} "
                             f"(or give head_dim)")
        if self.n_kv_heads is not None:
            check_size("n_kv_heads", self.n_kv_heads)
            if self.n_heads % self.n_kv_heads:
                raise InputError(f"n_kv_heads: expected a divisor of n_heads={self.n_heads} (each key/value head "
                                 f"serves a whole group of query heads), got {self.n_kv_heads}")
        for n in ("vocab_size", "d_ff", "n_positions"):
            if getattr(self, n) is not None:
                check_size(n, getattr(self, n))
        check_size("token_types", self.token_types, allow_zero=True)
        _check_choice("positions", self.positions, POSITIONS)
        _check_choice("kind", self.kind, KINDS)
        _check_choice("ffn", self.ffn, FFNS)
        _check_choice("norm", self.norm, NORMS)
        if self.pooler and self.kind != "encoder":
            raise InputError("pooler: expected only with kind='encoder', got pooler=True for a decoder")
        if self.kind == "encoder":
            modern = {"n_kv_heads": self.n_kv_heads is not None, "head_dim": self.head_dim is not None,
                      "ffn": self.ffn != "gelu", "norm": self.norm != "layernorm",
                      "qkv_bias": self.qkv_bias not in (None, self.bias)}
            for n, used in modern.items():
                if used:
                    raise InputError(f"{n}: expected only with kind='decoder', got {n}={getattr(self, n)!r} "
                                     f"for an encoder")
        if self.positions == "rope" and self.d_head % 2:
            raise InputError(f"head_dim: expected an even head size with rope positions (RoPE rotates pairs of "
                             f"channels), got {self.d_head}")
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
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def q_width(self) -> int:
        """h * d_head: the output size of W_q and the input size of W_o."""
        return self.n_heads * self.d_head

    @property
    def kv_width(self) -> int:
        """h_kv * d_head: the output size of W_k and of W_v (one row of the KV cache per layer)."""
        return self.kv_heads * self.d_head

    @property
    def has_qkv_bias(self) -> bool:
        return self.bias if self.qkv_bias is None else self.qkv_bias

    @property
    def standard_heads(self) -> bool:
        """h_kv = h and h d_head = d: the GPT-2 attention, four d x d matrices."""
        return self.kv_heads == self.n_heads and self.q_width == self.d_model

    def matrix_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_out, d_in) of every per-layer weight matrix LoRA could adapt (swiglu adds ffn_gate)."""
        d, f, q, kv = self.d_model, self.ffn_inner, self.q_width, self.kv_width
        shapes = {"q": (q, d), "k": (kv, d), "v": (kv, d), "o": (d, q), "ffn_in": (f, d), "ffn_out": (d, f)}
        if self.ffn == "swiglu":
            shapes["ffn_gate"] = (f, d)
        return shapes

    def describe(self) -> str:
        ffn = f"d_ff={self.d_ff}" if self.d_ff is not None else f"d_ff={self.ffn_mult}*d={self.ffn_inner}"
        heads = f"h={self.n_heads}" + (f", h_kv={self.kv_heads}" if self.kv_heads != self.n_heads else "")
        width = f", h*d_head={self.q_width}" if self.q_width != self.d_model else ""
        bias = "on" if self.bias else "off"
        if self.has_qkv_bias != self.bias:
            bias += f" (q, k, v {'on' if self.has_qkv_bias else 'off'})"
        text = (f"{self.kind}: L={self.n_layers}, d={self.d_model}, {heads} (d_head={self.d_head}{width}), "
                f"T={self.context}, {self.ffn} {ffn}, {self.norm}, bias={bias}")
        if self.vocab_size is None:  # positions and the head only matter for the embedding/head counts
            return text + ", vocabulary not given (no embedding, head or total counts)"
        pos = (f"{self.positions_rows} learned positions" if self.positions == "learned"
               else f"{self.positions} positions")
        return (text + f", V={self.vocab_size}, {pos}"
                + (f", {'tied' if self.tied_embeddings else 'untied'} LM head" if self.kind == "decoder" else "")
                + (f", {self.token_types} token types" if self.token_types else "")
                + (", pooler" if self.pooler else ""))


def attention_params_per_layer(a: Architecture) -> Quantity:
    d, h, h_kv, dh = a.d_model, a.n_heads, a.kv_heads, a.d_head
    qkv_b = (a.q_width + 2 * a.kv_width) if a.has_qkv_bias else 0
    o_b = d if a.bias else 0
    n = 2 * d * a.q_width + 2 * d * a.kv_width + qkv_b + o_b
    if a.standard_heads and bool(qkv_b) == bool(o_b):
        f = f"4 d^2{' + 4 d' if a.bias else ''} = 4*{d}^2{f' + 4*{d}' if a.bias else ''} = {fmt_int(n)}"
    else:
        sym, num = ["2 d h d_head", "2 d h_kv d_head"], [f"2*{d}*{h}*{dh}", f"2*{d}*{h_kv}*{dh}"]
        if qkv_b:
            sym.append("h d_head + 2 h_kv d_head")
            num.append(f"{h}*{dh} + 2*{h_kv}*{dh}")
        if o_b:
            sym.append("d")
            num.append(f"{d}")
        f = f"{' + '.join(sym)} = {' + '.join(num)} = {fmt_int(n)}"
    what = "attention (W_q, W_k, W_v, W_o) per layer" + (f", {h_kv} K/V heads for {h} query heads"
                                                         if h_kv != h else "")
    return Quantity("attention_params_per_layer", what, n, "params", f)


def ffn_params_per_layer(a: Architecture) -> Quantity:
    d, ff = a.d_model, a.ffn_inner
    k = 3 if a.ffn == "swiglu" else 2  # matrices: gate, up, down / in, out
    n = k * d * ff + (((k - 1) * ff + d) if a.bias else 0)
    fb = (" + d_ff + d" if k == 2 else " + 2 d_ff + d") if a.bias else ""
    nb = (f" + {ff} + {d}" if k == 2 else f" + 2*{ff} + {d}") if a.bias else ""
    f = f"{k} d d_ff{fb} = {k}*{d}*{ff}{nb} = {fmt_int(n)}"
    label = (f"SwiGLU FFN (gate, up {d} -> {ff}; down {ff} -> {d}) per layer" if k == 3
             else f"FFN ({d} -> {ff} -> {d}) per layer")
    return Quantity("ffn_params_per_layer", label, n, "params", f)


def _norm_size(a: Architecture) -> int:
    return 2 * a.d_model if a.bias and a.norm == "layernorm" else a.d_model


def count_parameters(a: Architecture) -> list[Quantity]:
    """Per component and in total; embeddings, head and total only when vocab_size is known."""
    L, d = a.n_layers, a.d_model
    out: list[Quantity] = []
    att, ffn = attention_params_per_layer(a), ffn_params_per_layer(a)
    ln = _norm_size(a)
    ln_txt = "2d" if ln == 2 * d else "d"
    norm_name = "RMSNorm" if a.norm == "rmsnorm" else "LayerNorm"
    extra_norm = f"embedding {norm_name}" if a.kind == "encoder" else f"final {norm_name}"
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
    out.append(Quantity("norm_params", f"{norm_name}s (2 per layer + {extra_norm})", norms, "params",
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
