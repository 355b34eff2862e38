"""G.1-G.3 with one classic slip per answer (the test names each), as a notebook export would be."""
import math

G1_P_MAT = 0.7500  # rounded by hand
G1_CE_LOSS = -math.log2(math.exp(3.0) / (math.exp(0.5) + math.exp(0.1) + math.exp(3.0) + math.exp(0.2) + math.e))
G2C_SCORES_BYTES = None  # TODO
G2C_SCORES_GB = 48 * 16384**2 * 2 / 2**30  # that is GiB
G2C_SCORES_GIB = 48 * 16384**2 * 2 / 2**30
G2D_FFN_PARAMS = 48 * 2 * 4 * 6144**2  # biases forgotten
G2E_LORA_PARAMS = 48 * 8 * (6144 + 6144)  # once per layer
G2E_LORA_ADAM_BYTES = 4 * 48 * 8 * 2 * (6144 + 6144)  # one state
G2E_ADAM_RATIO = "about 0.065%"
G3_PARAMS = 32000 * 512 + 258 * 512 + 512 + 4 * (6 * (512 * 512 + 512) + 2 * 512)  # LayerNorm weights only
G3_PARAMS_TORCH = 22829056 + 4 * (2 * (512 * 2048 - 512 * 512) + 3 * 512)  # dim_feedforward left at 2048
print(summary)
