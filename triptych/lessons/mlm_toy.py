"""Exercise G.1: the masked-LM toy. One masked position, a five-word vocabulary, the model's logits:

    p = softmax(z) = exp(z - max z) / sum exp(z - max z)
    loss = -log p[target] = logsumexp(z) - z[target]
    d loss / d z = p - onehot(target)

computed step by step in NumPy, then by numpy_impl.losses.cross_entropy, JAX and torch's
F.cross_entropy, with the gradient from the hand-written backward, jax.grad and torch autograd."""
from __future__ import annotations

import numpy as np

VOCAB = ("cat", "dog", "mat", "ran", "sat")
LOGITS = (0.5, 0.1, 3.0, 0.2, 1.0)
TARGET = "mat"


def compute() -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F

    import jax_impl.losses as jl
    from numpy_impl.losses import cross_entropy_backward, cross_entropy_forward

    z = np.array(LOGITS, dtype=np.float64)
    t = VOCAB.index(TARGET)

    # Step by step, as on paper.
    shift = z.max()
    shifted = z - shift  # softmax is unchanged by a shift; it keeps exp() from overflowing
    e = np.exp(shifted)
    total = e.sum()
    p = e / total
    loss_steps = -np.log(p[t])
    logsumexp = shift + np.log(total)
    loss_lse = logsumexp - z[t]  # the same loss without forming p: what libraries compute

    # The project's NumPy loss with its hand-written backward.
    loss_np, cache = cross_entropy_forward(z[None, :], np.array([t]))
    grad_np = cross_entropy_backward(1.0, cache)[0]

    # JAX: the jitted loss and jax.grad of it.
    zj, tj = jnp.asarray(z)[None, :], jnp.array([t])
    loss_jax = float(jl.cross_entropy(zj, tj))
    grad_jax = np.asarray(jax.grad(lambda x: jl.cross_entropy(x, tj))(zj))[0]

    # torch: F.cross_entropy and autograd.
    zt = torch.tensor(z, requires_grad=True)
    loss_t = F.cross_entropy(zt[None, :], torch.tensor([t]))
    loss_t.backward()

    return {
        "vocab": list(VOCAB), "logits": z.tolist(), "target": TARGET, "target_index": t,
        "max_logit": float(shift), "shifted": shifted.tolist(), "exp": e.tolist(), "sum_exp": float(total),
        "probs": p.tolist(), "p_target": float(p[t]), "loss": float(loss_steps), "logsumexp": float(logsumexp),
        "loss_logsumexp": float(loss_lse), "predicted": VOCAB[int(np.argmax(p))],
        "backends": {"numpy": float(loss_np), "jax": loss_jax, "torch": loss_t.item()},
        "grad": {"numpy": grad_np.tolist(), "jax": grad_jax.tolist(), "torch": zt.grad.numpy().tolist()},
        "uniform_loss": float(np.log(len(VOCAB))),
    }


def passed(result: dict) -> bool:
    from triptych.common.tolerances import tolerance, within

    b, g = result["backends"], result["grad"]
    return (within([b["numpy"], b["jax"], result["loss"]], [b["torch"]] * 3, tolerance("float64"))
            and within(g["numpy"], g["torch"], tolerance("float64", "grad"))
            and within(g["jax"], g["torch"], tolerance("float64", "grad")))


def to_json(result: dict) -> dict:
    keep = ("vocab", "logits", "target", "probs", "p_target", "loss", "backends", "grad")
    return {k: result[k] for k in keep}


def render(result: dict, console) -> None:
    from triptych.lessons import _render as R

    rows = []
    for i, w in enumerate(result["vocab"]):
        rows.append((w + ("  <- target" if i == result["target_index"] else ""), R.num(result["logits"][i]),
                     R.num(result["shifted"][i]), R.num(result["exp"][i], 6), R.num(result["probs"][i], 6),
                     R.num(result["grad"]["numpy"][i], 6)))
    t = result["target_index"]
    console.print(R.panel(
        "G.1 Masked-LM toy: which word fills the blank?",
        f"vocabulary {result['vocab']}, logits {result['logits']}, correct word {result['target']!r} (index {t})",
        R.table(["word", "logit z", "z - max z", "exp(z - max z)", "p = exp / sum", "dloss/dz = p - onehot"], rows),
        R.code(f"1. max z = {R.num(result['max_logit'])}; subtracting it changes nothing in the ratio, "
               "but exp() can no longer overflow"),
        R.code(f"2. sum exp = {R.num(result['sum_exp'], 6)}"),
        R.code(f"3. p({result['target']}) = {R.num(result['exp'][t], 6)} / {R.num(result['sum_exp'], 6)} "
               f"= {R.num(result['p_target'], 6)}"),
        R.code(f"4. loss = -log p({result['target']}) = {R.num(result['loss'], 6)}"),
        R.code(f"   the same without p: logsumexp(z) - z[target] = {R.num(result['logsumexp'], 6)} - "
               f"{R.num(result['logits'][t])} = {R.num(result['loss_logsumexp'], 6)}"),
        R.note(f"The model already prefers {result['predicted']!r}; a uniform guess would cost "
               f"log 5 = {R.num(result['uniform_loss'], 6)}. The gradient pushes the target's logit up by "
               f"1 - p = {R.num(1 - result['p_target'], 6)} and every other logit down by its probability."),
    ))
    b, g = result["backends"], result["grad"]
    ref_g = np.array(g["torch"])
    console.print(R.panel(
        "The same loss and gradient in three backends",
        R.table(["backend", "how", "loss", "|loss - torch|", "max |grad - torch grad|"], [
            ("NumPy", "numpy_impl.losses.cross_entropy + hand-written backward", R.num(b["numpy"], 10),
             R.err(abs(b["numpy"] - b["torch"])), R.err(np.max(np.abs(np.array(g["numpy"]) - ref_g)))),
            ("JAX", "jax_impl.losses.cross_entropy + jax.grad", R.num(b["jax"], 10),
             R.err(abs(b["jax"] - b["torch"])), R.err(np.max(np.abs(np.array(g["jax"]) - ref_g)))),
            ("torch", "F.cross_entropy + autograd", R.num(b["torch"], 10), "-", "-"),
        ]),
    ))
