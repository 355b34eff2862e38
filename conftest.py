"""Make the repository root importable for tests and enable JAX float64 before any array exists."""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


import pytest  # noqa: E402  (after sys.path is set)


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for a module of tiny models: pytest runs two workers on two cores, and
    more threads per worker only spin on synchronisation for 16-wide matmuls.
    Use with `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2_two_layers():
    """SmolLM2-135M's real weights cut to its first 2 layers, float64: (params, config). The only
    skip allowed is the model package being absent, and `make setup` installs it."""
    from triptych.pretrained import ModelMissingError, smollm2

    try:
        return smollm2.load_llama(n_layers=2, dtype="float64")
    except ModelMissingError as e:
        pytest.skip(str(e))
