"""The class stubs `triptych exercise new course-a` writes, one per framework. Their attribute names
are the contract: the checker loads the reference weights into W_q, W_k, W_v, W_o (torch nn.Linear)
or W_q, b_q, ..., W_o, b_o (NumPy/JAX arrays, (d_out, d_in) layout), so keep them as they are."""

_MHA_DOC = '''    """Multi-head attention, the whole computation in this class.

    query (B, T_q, C), key and value (B, T_k, C), mask bool (T_q, T_k) with True = may attend, or None
    -> out (B, T_q, C), weights PER HEAD (B, n_heads, T_q, T_k).

    Do not call get_multihead_qkv or calculate_multihead_attention here (the course asks the class
    to do everything itself). Keep the weight names: the checker loads its weights into them.
    """
'''

_PE_DOC = '''    """Sinusoidal positions added to a batch-first x (B, T, d_model) -> same shape and dtype.

    PE[pos, 2i] = sin(pos / 10000^(2i / d_model)), PE[pos, 2i + 1] = cos(pos / 10000^(2i / d_model)).
    No dropout (this is the layer in eval mode).
    """
'''

_ARRAY_MHA = '''class MultiHeadAttention:
{doc}
    def __init__(self, d_model, n_heads):
        self.d_model, self.n_heads = d_model, n_heads
        # (d_out, d_in) weights used as x @ W.T + b; the checker overwrites them with its own.
        self.W_q, self.b_q = {xp}.zeros((d_model, d_model)), {xp}.zeros(d_model)
        self.W_k, self.b_k = {xp}.zeros((d_model, d_model)), {xp}.zeros(d_model)
        self.W_v, self.b_v = {xp}.zeros((d_model, d_model)), {xp}.zeros(d_model)
        self.W_o, self.b_o = {xp}.zeros((d_model, d_model)), {xp}.zeros(d_model)

    def __call__(self, query, key, value, mask=None):
        # TODO: project, split into heads, softmax(q k^T / sqrt(head size)) v per head, merge, project out
        raise NotImplementedError
'''

_ARRAY_PE = '''class PositionalEncoding:
{doc}
    def __init__(self, d_model, max_len=5000):
        self.d_model, self.max_len = d_model, max_len
        # TODO: build the (max_len, d_model) table here

    def __call__(self, x):
        # TODO: add the table's first T rows along the sequence axis
        raise NotImplementedError
'''

_TORCH_MHA = '''class MultiHeadAttention(nn.Module):
{doc}
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None):
        # TODO: project, split into heads, softmax(q k^T / sqrt(head size)) v per head, merge, project out
        raise NotImplementedError
'''

_TORCH_PE = '''class PositionalEncoding(nn.Module):
{doc}
    def __init__(self, d_model, max_len=5000):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        # TODO: build the (max_len, d_model) table; self.register_buffer("pe", table) keeps it with the module

    def forward(self, x):
        # TODO: add the table's first T rows along the sequence axis
        raise NotImplementedError
'''

SKELETONS = {
    "MultiHeadAttention": {"numpy": _ARRAY_MHA.format(doc=_MHA_DOC, xp="np"),
                           "jax": _ARRAY_MHA.format(doc=_MHA_DOC, xp="jnp"),
                           "torch": _TORCH_MHA.format(doc=_MHA_DOC)},
    "PositionalEncoding": {"numpy": _ARRAY_PE.format(doc=_PE_DOC), "jax": _ARRAY_PE.format(doc=_PE_DOC),
                           "torch": _TORCH_PE.format(doc=_PE_DOC)},
}
