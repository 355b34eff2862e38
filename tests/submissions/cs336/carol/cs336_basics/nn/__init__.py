from .layers import Embedding, Linear, RMSNorm, SwiGLU
from .attention import CausalSelfAttention, RoPE, sdpa
from .model import Block, LanguageModel
from .functional import cross_entropy, gradient_clip, silu, softmax
