"""A student's answers to G.1-G.3, worked out by hand as expressions (no project code)."""
import math

# G.1: softmax over the five logits, then -ln p
LOGITS = [0.5, 0.1, 3.0, 0.2, 1.0]
G1_P_MAT = math.exp(3.0) / sum(math.exp(z) for z in LOGITS)
G1_CE_LOSS = -math.log(G1_P_MAT)

# G.2: L = 48, H = 6144, h = 48, T = 16384
L, H, h, T = 48, 6144, 48, 16384
G2C_SCORES_BYTES = h * T * T * 2
G2C_SCORES_GB = G2C_SCORES_BYTES / 1e9
G2C_SCORES_GIB = G2C_SCORES_BYTES / 2**30
G2D_FFN_PARAMS = L * (H * 4 * H + 4 * H + 4 * H * H + H)
G2E_LORA_PARAMS = L * 2 * 8 * (H + H)  # W_Q and W_V: A (8 x H) and B (H x 8) each
G2E_LORA_ADAM_BYTES = 8 * G2E_LORA_PARAMS
G2E_ADAM_RATIO = G2E_LORA_ADAM_BYTES / (8 * G2D_FFN_PARAMS)

# G.3: N = 4, d = 512, V = 32000, 258 positions, d_ff = d
N, d = 4, 512
embeddings = 32000 * d + 258 * d + 2 * d            # tokens, positions, embedding LayerNorm
layer = 4 * (d * d + d) + 2 * (d * d + d) + 2 * 2 * d  # q, k, v, o; W1, W2; two LayerNorms
G3_PARAMS = embeddings + N * layer
G3_PARAMS_TORCH = 22_829_056  # printed by sum(p.numel() for p in model.parameters())
