"""Exercise D: argmax (hard) attention, and why gradient descent cannot train it.

    scores = K q,   weights = onehot(argmax scores),   out = weights V

The output is piecewise constant in q and K: small moves of the query leave the argmax, hence the
output, unchanged, so d out / d q = 0 wherever it exists (everywhere except on the ties, where the
output jumps and there is no derivative). Gradient descent on q or K therefore never moves. Softmax
attention softmax(beta * scores) V is the smooth relative: as beta = 1/T grows its output approaches
the argmax output, and its gradient shrinks towards the same zero.
"""
from __future__ import annotations

import numpy as np

# Exercise D's keys k_1..k_4, values and query (exercises.md).
K = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 2.0], [-1.0, 1.0, -2.0], [0.0, -1.0, -2.0]])
V = np.array([[3.0, 2.0, -4.0], [3.0, -2.0, 4.0], [3.0, 2.0, 0.0], [3.0, 2.0, 4.0]])
Q = np.array([-2.0, 1.0, 1.0])
# The loss whose gradient we ask for: pull the output towards v_4 (the attention "should" look there).
GOAL = V[3]
BETAS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def argmax_attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray):
    """Hard attention in NumPy. Shapes: q (D,), keys (T, D), values (T, D_v) -> out (D_v,), weights (T,), scores (T,)"""
    scores = keys @ q
    weights = np.zeros(len(keys))
    weights[np.argmax(scores)] = 1.0  # np.argmax takes the first of tied maxima
    return weights @ values, weights, scores


def _loss_np(out: np.ndarray) -> float:
    return float(np.sum((out - GOAL) ** 2))


def _torch_grads():
    """torch autograd through hard attention (argmax -> one_hot) and through softmax attention."""
    import torch
    import torch.nn.functional as F

    q = torch.tensor(Q, requires_grad=True)
    k = torch.tensor(K, requires_grad=True)
    v = torch.tensor(V, requires_grad=True)
    goal = torch.tensor(GOAL)

    scores = k @ q
    hard = F.one_hot(scores.argmax(), len(K)).to(v.dtype)  # integer indices: no path back to q or k
    loss_hard = ((hard @ v - goal) ** 2).sum()
    g_hard = torch.autograd.grad(loss_hard, [q, k, v], allow_unused=True)

    soft = torch.softmax(k @ q, dim=-1)
    loss_soft = ((soft @ v - goal) ** 2).sum()
    g_soft = torch.autograd.grad(loss_soft, [q, k, v])
    return ([None if g is None else g.numpy() for g in g_hard], [g.numpy() for g in g_soft],
            loss_hard.item(), loss_soft.item())


def _jax_grads():
    """jax.grad through the same two functions; JAX defines argmax's derivative as zero."""
    import jax
    import jax.numpy as jnp

    import jax_impl  # noqa: F401  (float64 on)

    def hard(q, k, v):
        w = jax.nn.one_hot(jnp.argmax(k @ q), k.shape[0], dtype=v.dtype)
        return jnp.sum((w @ v - GOAL) ** 2)

    def soft(q, k, v):
        return jnp.sum((jax.nn.softmax(k @ q) @ v - GOAL) ** 2)

    args = (jnp.asarray(Q), jnp.asarray(K), jnp.asarray(V))
    return ([np.asarray(g) for g in jax.grad(hard, argnums=(0, 1, 2))(*args)],
            [np.asarray(g) for g in jax.grad(soft, argnums=(0, 1, 2))(*args)])


def _numpy_soft_grad_q() -> np.ndarray:
    """The project's hand-written attention backward (scale 1) for the same softmax loss."""
    from numpy_impl.attention import scaled_dot_product_attention, scaled_dot_product_attention_backward

    out, w = scaled_dot_product_attention(Q[None, :], K, V, scale=1.0)
    dq, _, _ = scaled_dot_product_attention_backward(2 * (out - GOAL), Q[None, :], K, V, w, scale=1.0)
    return dq[0]


def _finite_difference_q(h: float = 1e-6) -> np.ndarray:
    """Central differences of the hard-attention loss in q: exactly 0 away from ties."""
    g = np.zeros(3)
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        g[i] = (_loss_np(argmax_attention(Q + e, K, V)[0]) - _loss_np(argmax_attention(Q - e, K, V)[0])) / (2 * h)
    return g


def _walk() -> list[dict]:
    """Move q towards k_4 in 100 steps: the hard output is a staircase, flat between jumps."""
    direction = K[3] - Q
    rows = []
    for t in np.linspace(0.0, 1.0, 101):
        out, w, s = argmax_attention(Q + t * direction, K, V)
        top = np.sort(s)[-2:]
        rows.append({"t": float(t), "scores": s.tolist(), "winner": int(np.argmax(w)) + 1, "output": out.tolist(),
                     "loss": _loss_np(out), "tie": bool(top[1] - top[0] < 1e-9)})
    return rows


def _temperature_table() -> list[dict]:
    import torch

    out_hard = argmax_attention(Q, K, V)[0]
    rows = []
    for beta in BETAS:
        from numpy_impl.attention import scaled_dot_product_attention

        out, w = scaled_dot_product_attention(Q[None, :], K, V, scale=beta)
        q = torch.tensor(Q, requires_grad=True)
        loss = ((torch.softmax(beta * (torch.tensor(K) @ q), -1) @ torch.tensor(V) - torch.tensor(GOAL)) ** 2).sum()
        (gq,) = torch.autograd.grad(loss, [q])
        rows.append({"beta": beta, "weights": w[0].tolist(), "output": out[0].tolist(),
                     "distance_to_argmax": float(np.max(np.abs(out[0] - out_hard))),
                     "grad_q_norm": float(gq.norm())})
    return rows


def compute() -> dict:
    out, w, scores = argmax_attention(Q, K, V)
    g_hard_t, g_soft_t, loss_hard_t, loss_soft_t = _torch_grads()
    g_hard_j, g_soft_j = _jax_grads()
    return {
        "keys": K.tolist(), "values": V.tolist(), "query": Q.tolist(), "goal": GOAL.tolist(),
        "scores": scores.tolist(), "weights": w.tolist(), "output": out.tolist(), "winner": int(np.argmax(w)) + 1,
        "loss_hard": _loss_np(out), "loss_hard_torch": loss_hard_t, "loss_soft_torch": loss_soft_t,
        "hard_grad": {
            "torch": {name: (None if g is None else g.tolist()) for name, g in zip("qkv", g_hard_t)},
            "jax": {name: g.tolist() for name, g in zip("qkv", g_hard_j)},
            "finite_difference_q": _finite_difference_q().tolist(),
        },
        "soft_grad": {
            "torch": {name: g.tolist() for name, g in zip("qkv", g_soft_t)},
            "jax": {name: g.tolist() for name, g in zip("qkv", g_soft_j)},
            "numpy_q": _numpy_soft_grad_q().tolist(),
        },
        "walk": _walk(),
        "temperature": _temperature_table(),
    }


def passed(result: dict) -> bool:
    """The three softmax gradients agree (float64 gradient tolerance) and the argmax ones vanish."""
    from triptych.common.tolerances import tolerance, within

    sg, hg = result["soft_grad"], result["hard_grad"]
    tol = tolerance("float64", "grad")
    return (within(sg["jax"]["q"], sg["torch"]["q"], tol) and within(sg["numpy_q"], sg["torch"]["q"], tol)
            and not np.any(hg["jax"]["q"]) and hg["torch"]["q"] is None)


def plot(result: dict, path) -> None:
    """Left: the staircase loss along a path of queries. Right: softmax -> argmax as beta grows."""
    from triptych.lessons import _render as R

    fig, axes = R.figure(ncols=2, width=5.0)
    ax1, ax2 = axes[0]
    walk = result["walk"]
    ax1.plot([r["t"] for r in walk], [r["loss"] for r in walk], ".", markersize=3)
    ax1.set_xlabel("t in q + t (k_4 - q)")
    ax1.set_ylabel("loss |out - v_4|^2 (argmax attention)")
    ax1.set_title("piecewise constant: gradient 0 or undefined")
    rows = result["temperature"]
    beta = [r["beta"] for r in rows]
    distance, grad = [r["distance_to_argmax"] for r in rows], [r["grad_q_norm"] for r in rows]
    ax2.plot(beta, distance, "o-", label="max |out - argmax out|")
    ax2.plot(beta, grad, "s-", label="|d loss / d q|")
    ax2.set_xscale("log")
    R.log_axis_keeping_zero(ax2, distance + grad)  # an exact 0 (the softmax underflowed to argmax) shows as 0
    ax2.set_xlabel("beta = 1 / temperature")
    ax2.set_title("softmax(beta * scores): towards argmax")
    ax2.legend()
    R.save_figure(fig, path)


def to_json(result: dict) -> dict:
    keep = ("scores", "weights", "output", "winner", "hard_grad", "soft_grad", "temperature")
    return {k: result[k] for k in keep}


def render(result: dict, console) -> None:
    from triptych.lessons import _render as R

    rows = [(f"{j + 1}", R.vec(k, 1), R.vec(v, 1), R.num(s, 1), R.num(w, 0))
            for j, (k, v, s, w) in enumerate(zip(result["keys"], result["values"], result["scores"], result["weights"]))]
    console.print(R.panel(
        "D. Argmax attention: weights = onehot(argmax K q)",
        R.code(f"q = {R.vec(result['query'], 1)}"),
        R.table(["token", "key k_j", "value v_j", "score k_j . q", "weight"], rows),
        f"the highest score belongs to token {result['winner']}, so out = v_{result['winner']} = "
        f"{R.vec(result['output'], 1)}",
    ))
    _print_gradients(result, console)
    _print_walk_and_temperature(result, console)


def _gradient_rows(hg: dict, sg: dict) -> list[tuple]:
    """(attention, computed by, w.r.t., first 3 numbers, norm) for each gradient the lesson computed."""
    from triptych.lessons import _render as R

    def show(g):
        return "None (no path)" if g is None else R.vec(np.asarray(g).reshape(-1)[:3], 4) + (" ..." if np.size(g) > 3 else "")

    def norm(g):
        return "-" if g is None else R.num(float(np.linalg.norm(g)), 6)

    return [
        ("argmax", "torch autograd", "q", show(hg["torch"]["q"]), norm(hg["torch"]["q"])),
        ("argmax", "torch autograd", "K", show(hg["torch"]["k"]), norm(hg["torch"]["k"])),
        ("argmax", "torch autograd", "V", show(hg["torch"]["v"]), norm(hg["torch"]["v"])),
        ("argmax", "jax.grad", "q", show(hg["jax"]["q"]), norm(hg["jax"]["q"])),
        ("argmax", "jax.grad", "K", show(hg["jax"]["k"]), norm(hg["jax"]["k"])),
        ("argmax", "jax.grad", "V", show(hg["jax"]["v"]), norm(hg["jax"]["v"])),
        ("argmax", "finite differences (h=1e-6)", "q", show(hg["finite_difference_q"]), norm(hg["finite_difference_q"])),
        ("softmax", "torch autograd", "q", show(sg["torch"]["q"]), norm(sg["torch"]["q"])),
        ("softmax", "jax.grad", "q", show(sg["jax"]["q"]), norm(sg["jax"]["q"])),
        ("softmax", "NumPy hand-written backward", "q", show(sg["numpy_q"]), norm(sg["numpy_q"])),
        ("softmax", "torch autograd", "K", show(sg["torch"]["k"]), norm(sg["torch"]["k"])),
    ]


def _print_gradients(result: dict, console) -> None:
    from triptych.lessons import _render as R

    console.print(R.panel(
        f"Gradient of loss = |out - v_4|^2 (argmax loss {R.num(result['loss_hard'], 2)}, softmax loss "
        f"{R.num(result['loss_soft_torch'], 4)})",
        R.table(["attention", "computed by", "w.r.t.", "gradient (first 3)", "norm"],
                _gradient_rows(result["hard_grad"], result["soft_grad"])),
        R.note("Hard attention gives q and K, the parameters that decide WHERE to look, no gradient: torch has no "
               "graph path through the integer argmax (grad None), jax.grad returns exact zeros, and finite "
               "differences agree (a step of 1e-6 does not change the winner). Only V, the thing being looked "
               "at, learns. Softmax attention gives every parameter a non-zero gradient."),
    ))


def _print_walk_and_temperature(result: dict, console) -> None:
    from triptych.lessons import _render as R

    walk = [(R.num(r["t"], 1), R.vec(r["scores"], 2), f"{r['winner']}" + ("  (tie: the jump)" if r["tie"] else ""),
             R.vec(r["output"], 1), R.num(r["loss"], 1))
            for r in result["walk"][::10]]
    console.print(R.panel(
        "Moving q towards k_4: the argmax output is a staircase",
        R.table(["t in q + t (k_4 - q)", "scores", "winner", "output", "loss"], walk),
        R.note("Between jumps the loss is flat (derivative 0); at a jump it is discontinuous (no derivative). "
               "Zero almost everywhere: there is no slope to follow downhill."),
    ))

    temp = [(R.num(r["beta"], 1), R.vec(r["weights"], 4), R.vec(r["output"], 4), R.err(r["distance_to_argmax"]),
             R.num(r["grad_q_norm"], 6)) for r in result["temperature"]]
    console.print(R.panel(
        "softmax(beta * scores) with beta = 1/T growing: back to argmax",
        R.table(["beta", "weights", "output", "max |out - argmax out|", "|d loss / d q| (torch)"], temp),
        R.note("As the temperature T = 1/beta falls the softmax output converges to the argmax output and the "
               "gradient fades with it: the smooth version is trainable precisely because it is not yet hard."),
    ))
