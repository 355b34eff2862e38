"""Backend-neutral training of the tiny GPT: character data, one trainer loop that drives the NumPy,
JAX or torch model, atomic checkpoints that resume exactly, sampling, the attention experiments and
their report. The models themselves live in numpy_impl/jax_impl/torch_ref .gpt."""
