"""Text generation from the Llama-style model: decoding engines (engines.py) and the sampling loop."""
