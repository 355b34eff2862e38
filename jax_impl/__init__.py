"""JAX versions of the numpy_impl functions: same modules, same names, jit-compiled.

float64 must be switched on before any JAX array exists, otherwise float64 inputs are silently
computed in float32; importing jax_impl does it once for the whole process."""
import jax

jax.config.update("jax_enable_x64", True)
# Full-precision fp32 matmuls (no TF32 on GPU), so float32 parity holds on every device.
jax.config.update("jax_default_matmul_precision", "highest")
