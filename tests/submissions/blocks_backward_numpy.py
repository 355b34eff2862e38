"""A correct NumPy answer to every exercise of blocks-backward and blocks-attention (the checker's tests
plant one mistake at a time on top of it)."""
import math
import numpy as np

C = math.sqrt(2 / math.pi)


def layer_norm_backward(dout, x, weight, bias, eps=1e-5):
    xc = x - x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt((xc ** 2).mean(-1, keepdims=True) + eps)
    xhat = xc * rstd
    dxhat = dout * weight
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    lead = tuple(range(x.ndim - 1))
    return dx, (dout * xhat).sum(lead), dout.sum(lead)


def gelu_backward(dout, x):
    t = np.tanh(C * (x + 0.044715 * x ** 3))
    return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C * (1 + 3 * 0.044715 * x * x))


def cross_entropy_backward(dloss, logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.eye(logits.shape[-1], dtype=logits.dtype)[np.where(keep, targets, 0)]
    return (p - onehot) * (keep[..., None] * (dloss / max(keep.sum(), 1))).astype(logits.dtype)


def _s(lora, alpha, use_rslora):
    r = lora["lora_A"].shape[0]
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def lora_linear(x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
    xd = x if dropout_mask is None else x * dropout_mask
    y = x @ w.T + _s(lora, alpha, use_rslora) * (xd @ lora["lora_A"].T) @ lora["lora_B"].T
    return y if b is None else y + b


def lora_linear_backward(dy, x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
    s = _s(lora, alpha, use_rslora)
    A, B = lora["lora_A"], lora["lora_B"]
    xd = x if dropout_mask is None else x * dropout_mask
    u = xd @ A.T
    dy2, xd2 = dy.reshape(-1, dy.shape[-1]), xd.reshape(-1, x.shape[-1])
    dB = s * dy2.T @ u.reshape(-1, A.shape[0])
    du = s * dy @ B
    dA = du.reshape(-1, A.shape[0]).T @ xd2
    dxd = du @ A
    dx = dy @ w + (dxd if dropout_mask is None else dxd * dropout_mask)
    return dA, dB, dx


def merge_lora(w, lora, alpha, use_rslora=False):
    return w + _s(lora, alpha, use_rslora) * lora["lora_B"] @ lora["lora_A"]


def unmerge_lora(w_merged, lora, alpha, use_rslora=False):
    return w_merged - _s(lora, alpha, use_rslora) * lora["lora_B"] @ lora["lora_A"]


def adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** step)
    v_hat = v / (1 - b2 ** step)
    p = p * (1 - lr * weight_decay) - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


def _softmax(s):
    top = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(top), 0.0, top))
    d = e.sum(-1, keepdims=True)
    return e / np.where(d == 0, 1.0, d)


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    w = _softmax(s)
    return w @ v, w


def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    dw = dout @ np.swapaxes(v, -1, -2)
    dv = np.swapaxes(weights, -1, -2) @ dout
    ds = weights * (dw - (dw * weights).sum(-1, keepdims=True)) * scale
    return ds @ k, np.swapaxes(ds, -1, -2) @ q, dv


def multihead_attention(x, params, n_heads, kv=None, mask=None):
    kv = x if kv is None else kv
    B, T, C = x.shape

    def proj(t, n):
        y = t @ params["w_" + n].T + params["b_" + n]
        return y.reshape(B, t.shape[1], n_heads, C // n_heads).transpose(0, 2, 1, 3)

    out, w = scaled_dot_product_attention(proj(x, "q"), proj(kv, "k"), proj(kv, "v"), mask)
    out = out.transpose(0, 2, 1, 3).reshape(B, T, C)
    return out @ params["w_o"].T + params["b_o"], w


def sinusoidal_encoding(max_len, d_model, base=10000.0):
    ang = np.arange(max_len)[:, None] / base ** (np.arange(0, d_model, 2) / d_model)
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2] = np.sin(ang)
    pe[:, 1::2] = np.cos(ang)
    return pe


def _cos_sin(x, positions, base, layout):
    T, D = x.shape[-2:]
    pos = np.arange(T) if positions is None else positions
    ang = pos[..., None] / base ** (np.arange(0, D, 2) / D)
    ang = np.concatenate([ang, ang], -1) if layout == "half" else np.repeat(ang, 2, -1)
    if ang.ndim == 3:
        ang = ang.reshape((x.shape[0],) + (1,) * (x.ndim - 3) + ang.shape[1:])
    return np.cos(ang).astype(x.dtype), np.sin(ang).astype(x.dtype)


def _turn(x, layout):
    if layout == "half":
        a, b = np.split(x, 2, -1)
        return np.concatenate([-b, a], -1)
    return np.stack([-x[..., 1::2], x[..., 0::2]], -1).reshape(x.shape)


def apply_rope(x, positions=None, base=10000.0, layout="half"):
    cos, sin = _cos_sin(x, positions, base, layout)
    return x * cos + _turn(x, layout) * sin


def apply_rope_backward(dout, positions=None, base=10000.0, layout="half"):
    cos, sin = _cos_sin(dout, positions, base, layout)
    return dout * cos - _turn(dout * sin, layout)


def multihead_attention_backward(dout, x, params, n_heads, weights, kv):
    B, T, C = x.shape

    def split(t):
        return t.reshape(B, t.shape[1], n_heads, C // n_heads).transpose(0, 2, 1, 3)

    def merge(t):
        return t.transpose(0, 2, 1, 3).reshape(B, t.shape[2], C)

    def linear_backward(dy, a, w):
        return dy @ w, dy.reshape(-1, C).T @ a.reshape(-1, C), dy.sum((0, 1))

    q, k, v = (split(t @ params["w_" + n].T + params["b_" + n]) for t, n in ((x, "q"), (kv, "k"), (kv, "v")))
    dmerged, dw_o, db_o = linear_backward(dout, merge(weights @ v), params["w_o"])
    dq, dk, dv = scaled_dot_product_attention_backward(split(dmerged), q, k, v, weights)
    dx, dw_q, db_q = linear_backward(merge(dq), x, params["w_q"])
    dkv_k, dw_k, db_k = linear_backward(merge(dk), kv, params["w_k"])
    dkv_v, dw_v, db_v = linear_backward(merge(dv), kv, params["w_v"])
    return dx, dkv_k + dkv_v, dw_q, db_q, dw_k, db_k, dw_v, db_v, dw_o, db_o
