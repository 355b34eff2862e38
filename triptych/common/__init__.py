"""Backend-neutral pieces shared by numpy_impl, jax_impl and torch_ref: the tolerance table,
input checks with one wording for all three backends, and small file helpers."""
