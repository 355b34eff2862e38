"""One check per idea: each bad call below is refused by numpy_impl, jax_impl and torch_ref with the
identical message, and that message is the one triptych/common/backend_checks gives for the same
arguments (the backends call it; none keeps a copy)."""
import ast
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on)
from triptych.common import backend_checks as bc
from triptych.common.checks import InputError
from triptych.common.params import init_mha_params

import jax_impl.attention, jax_impl.flash, jax_impl.gqa, jax_impl.kvcache, jax_impl.masks  # noqa: E401
import jax_impl.multihead, jax_impl.positional, jax_impl.swiglu  # noqa: E401
import numpy_impl.attention, numpy_impl.flash, numpy_impl.gqa, numpy_impl.kvcache, numpy_impl.masks  # noqa: E401
import numpy_impl.multihead, numpy_impl.positional, numpy_impl.swiglu  # noqa: E401
import torch_ref.attention, torch_ref.flash, torch_ref.gqa, torch_ref.kvcache, torch_ref.masks  # noqa: E401
import torch_ref.multihead, torch_ref.positional, torch_ref.swiglu  # noqa: E401

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"numpy": numpy_impl, "jax": jax_impl, "torch": torch_ref}
CONVERT = {"numpy": np.asarray, "jax": jnp.asarray, "torch": lambda a: torch.from_numpy(np.array(a))}

R = np.random.default_rng(0)
Q, K, V = R.standard_normal((2, 3, 4)), R.standard_normal((2, 5, 4)), R.standard_normal((2, 5, 4))
X = R.standard_normal((2, 3, 8))
P = init_mha_params(8)
NAN_Q, NAN_X = Q.copy(), X.copy()
NAN_Q[0, 0, 0] = np.nan
NAN_X[1, 2, 3] = np.inf
INT_BIAS, INF_BIAS = np.ones((3, 5), dtype=np.int64), np.zeros((3, 5))
INF_BIAS[1, 1] = np.inf
Q4, K4 = R.standard_normal((1, 3, 4, 8)), R.standard_normal((1, 2, 5, 8))
LAYERS = [{"w_q": np.zeros((8, 8)), "w_k": np.zeros((4, 8)), "w_v": np.zeros((4, 8)), "w_o": np.zeros((8, 8))}]
W_GATE = R.standard_normal((6, 8))
SWIGLU = {"w_gate": W_GATE, "w_up": R.standard_normal((6, 8)), "w_down": R.standard_normal((8, 6))}

# name: (the bad call through a backend package b with converter c, the shared check on the same arguments)
CASES = {
    "qkv head sizes": (lambda b, c: b.attention.scaled_dot_product_attention(c(Q), c(K[..., :3]), c(V)),
                       lambda: bc.check_qkv(Q, K[..., :3], V)),
    "qkv NaN": (lambda b, c: b.attention.scaled_dot_product_attention(c(NAN_Q), c(K), c(V)),
                lambda: bc.check_qkv(NAN_Q, K, V, bc.numpy_finite_each)),
    "bias integer": (lambda b, c: b.attention.scaled_dot_product_attention(c(Q), c(K), c(V), bias=c(INT_BIAS)),
                     lambda: bc.check_bias(INT_BIAS, (2, 3, 5), None)),
    "bias inf": (lambda b, c: b.attention.scaled_dot_product_attention(c(Q), c(K), c(V), bias=c(INF_BIAS)),
                 lambda: bc.check_bias(INF_BIAS, (2, 3, 5), bc.numpy_finite_each)),
    "groups": (lambda b, c: b.gqa.grouped_query_attention(c(Q4), c(K4), c(K4)),
               lambda: bc.check_groups(Q4, K4, K4)),
    "offset": (lambda b, c: b.masks.make_causal_mask(3, 4, offset=1.5), lambda: bc.check_offset(1.5)),
    "t_past": (lambda b, c: b.kvcache.cache_mask(2, -1), lambda: bc.check_t_past(-1)),
    "layers": (lambda b, c: b.kvcache.attention_stack(c(X), [{k: c(w) for k, w in p.items()} for p in LAYERS], 4, 3),
               lambda: bc.check_layers(LAYERS, 8, 4, 3)),
    "mha params": (lambda b, c: b.multihead.multihead_attention(c(X), {}, 2), lambda: bc.check_mha_params({}, 8)),
    "sequence inf": (lambda b, c: b.multihead.multihead_attention(c(NAN_X), {k: c(w) for k, w in P.items()}, 2),
                     lambda: bc.check_sequence("x", NAN_X, None, bc.numpy_finite_each)),
    "even": (lambda b, c: b.positional.rope_cos_sin(c(np.arange(4)), 7), lambda: bc.check_even("d_head", 7, "RoPE")),
    "positions": (lambda b, c: b.positional.apply_rope(c(X), c(np.arange(4))),
                  lambda: bc.check_positions(X, np.arange(4))),
    "rope rows": (lambda b, c: b.positional.rope_half_to_interleaved(c(np.ones((6, 4))), 4),
                  lambda: bc.check_rope_rows(np.ones((6, 4)), 4)),
    "blocks": (lambda b, c: b.flash.flash_attention(c(Q), c(K), c(V), block_q=0), lambda: bc.check_blocks(0, 8)),
    "flash leading axes": (lambda b, c: b.flash.fast_attention(c(Q), c(K[:1]), c(V[:1])),
                           lambda: bc.check_flash(Q, K[:1], V[:1], False, None)),
    "flash causal": (lambda b, c: b.flash.flash_attention(c(Q), c(K), c(V), causal="yes"),
                     lambda: bc.check_flash(Q, K, V, "yes", None)),
    "swiglu keys": (lambda b, c: b.swiglu.swiglu_mlp(c(X), {"w_gate": c(W_GATE)}),
                    lambda: bc.check_swiglu(X, {"w_gate": W_GATE}, None)),
    "swiglu inf": (lambda b, c: b.swiglu.swiglu_mlp(c(NAN_X), {k: c(w) for k, w in SWIGLU.items()}),
                   lambda: bc.check_swiglu(NAN_X, SWIGLU, bc.numpy_finite_each)),
}


def _message(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("case", list(CASES))
def test_three_backends_refuse_in_the_shared_words(case):
    bad_call, shared = CASES[case]
    expected = _message(shared)
    got = {name: _message(lambda: bad_call(pkg, CONVERT[name])) for name, pkg in PACKAGES.items()}
    assert got == {name: expected for name in PACKAGES}
    assert expected.split(":")[0] in ("q", "k", "v", "x", "bias", "offset", "t_past", "n_kv_heads", "params",
                                      "d_head", "positions", "w", "block_q", "causal")


MOVED = {"_check_groups", "_check_offset", "_check_t_past", "_check_layers", "_check_params", "_check_even",
         "_check_positions", "_check_rope_rows", "_check_blocks", "_check_swiglu"}
DELEGATES = {"_check_qkv": "check_qkv", "_check_bias": "check_bias", "_check_sequence": "check_sequence"}


@pytest.mark.parametrize("backend", list(PACKAGES))
def test_no_backend_keeps_its_own_copy(backend):
    """The moved checks are defined nowhere in a backend; the three thin wrappers that remain only
    bind the backend's value reader to the shared check (one statement after the docstring)."""
    for path in sorted((ROOT / f"{backend}_impl" if backend != "torch" else ROOT / "torch_ref").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            assert node.name not in MOVED, f"{path.name} defines {node.name}"
            if node.name in DELEGATES:
                body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                assert len(body) == 1 and ast.unparse(body[0]).startswith(DELEGATES[node.name] + "("), path.name
