"""LoRA fine-tuning of a pretrained Llama (SmolLM2-135M) as a causal language model, in any backend.

    rows   = Austen text -> SmolLM2's tokenizer -> rows of block + 1 tokens (train: the start of the
             novels, validation: the end of Persuasion, never seen in training)
    step   = loss and adapter gradients (numpy: the hand-written backward of numpy_impl.llama_lora; jax:
             jax.grad; torch: peft + autograd), then AdamW on the adapters only (numpy_impl.optim,
             jax_impl.optim, torch.optim.AdamW with torch's single-tensor arithmetic)

The three trainers take the same start (adapters drawn once, NumPy) and the same batches, so their
losses can be compared step by step (parity_tests/test_llama_lora.py).
"""
from __future__ import annotations

import numpy as np

from triptych.common.llama_lora import causal_lm_pairs

__all__ = ["BACKENDS", "LoraLMData", "austen_rows", "make_lora_trainer"]

BACKENDS = ("numpy", "jax", "torch")


class LoraLMData:
    """Train and validation rows of token ids. Shapes: train (N, block + 1), val (M, block + 1)"""

    def __init__(self, train: np.ndarray, val: np.ndarray):
        self.train, self.val = train, val

    def batch(self, batch_size: int, step: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows drawn by (seed, step) alone, so a resumed run takes the batches it would have taken.
        Shapes: -> idx (B, block), targets (B, block)"""
        rng = np.random.default_rng([seed, step])
        return causal_lm_pairs(self.train[rng.integers(0, len(self.train), batch_size)])

    def val_batches(self, batch_size: int):
        for i in range(0, len(self.val), batch_size):
            yield causal_lm_pairs(self.val[i:i + batch_size])


def _rows(ids: list[int], block: int) -> np.ndarray:
    n = len(ids) // (block + 1)
    return np.asarray(ids[: n * (block + 1)], dtype=np.int64).reshape(n, block + 1)


def austen_rows(tokenizer, block: int = 128, train_chars: int = 200_000, val_chars: int = 20_000) -> LoraLMData:
    """The first train_chars characters of Austen's novels for training, the last val_chars for validation."""
    from triptych.corpora.austen import load_austen_text

    text = load_austen_text()
    return LoraLMData(_rows(tokenizer.encode(text[:train_chars]), block),
                      _rows(tokenizer.encode(text[-val_chars:]), block))


class _NumpyTrainer:
    """Hand-written backward + numpy_impl.optim.adamw_step."""

    def __init__(self, params, config, adapters, alpha, opt):
        from numpy_impl import llama_lora
        from numpy_impl.optim import adamw_init

        self.m, self.params, self.config, self.alpha, self.opt = llama_lora, params, config, alpha, opt
        self.lora = dict(adapters)
        self.state = adamw_init(self.lora)

    def step(self, idx, targets, lr: float) -> float:
        from numpy_impl.optim import adamw_step

        loss, grads = self.m.llama_lora_loss_and_grads(self.params, self.lora, idx, targets, self.config, self.alpha)
        self.lora, self.state = adamw_step(self.lora, grads, self.state, lr, **self.opt)
        return loss

    def loss(self, idx, targets) -> float:
        return self.m.llama_lora_loss(self.params, self.lora, idx, targets, self.config, self.alpha)

    def adapters(self) -> dict:
        return dict(self.lora)

    def opt_state(self) -> dict:
        return self.state

    def load_opt_state(self, state: dict) -> None:
        self.state = state


class _JaxTrainer(_NumpyTrainer):
    """jax.grad + jax_impl.optim.adamw_step (the base weights moved to the device once)."""

    def __init__(self, params, config, adapters, alpha, opt):
        import jax.numpy as jnp
        from jax_impl import llama_lora
        from jax_impl.optim import adamw_init

        self.m, self.config, self.alpha, self.opt = llama_lora, config, alpha, opt
        self.params = {k: jnp.asarray(v) for k, v in params.items()}
        self.lora = {k: jnp.asarray(v) for k, v in adapters.items()}
        self.state = adamw_init(self.lora)

    def step(self, idx, targets, lr: float) -> float:
        from jax_impl.optim import adamw_step

        loss, grads = self.m.llama_lora_loss_and_grads(self.params, self.lora, idx, targets, self.config, self.alpha)
        self.lora, self.state = adamw_step(self.lora, grads, self.state, lr, **self.opt)
        return float(loss)

    def loss(self, idx, targets) -> float:
        return float(self.m.llama_lora_loss(self.params, self.lora, idx, targets, self.config, self.alpha))

    def adapters(self) -> dict:
        return {k: np.asarray(v) for k, v in self.lora.items()}


class _TorchTrainer:
    """peft's model (built once) + torch.optim.AdamW over its adapter parameters."""

    def __init__(self, params, config, adapters, alpha, opt):
        import torch
        from torch_ref.llama_lora import peft_llama

        exact = params["embed.weight"].dtype == np.float64  # float64: HF's float32 RMSNorm and RoPE swapped
        self.torch, self.config = torch, config
        self.model = peft_llama(params, adapters, config, alpha, exact_float64=exact)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(self.trainable, betas=opt["betas"], eps=opt["eps"],
                                       weight_decay=opt["weight_decay"], foreach=False)

    def _loss(self, idx, targets):
        from torch_ref.losses import cross_entropy

        logits = self.model(input_ids=self.torch.as_tensor(np.asarray(idx)).long()).logits
        return cross_entropy(logits, self.torch.as_tensor(np.asarray(targets)).long())

    def step(self, idx, targets, lr: float) -> float:
        for g in self.optim.param_groups:
            g["lr"] = lr
        self.optim.zero_grad(set_to_none=True)
        loss = self._loss(idx, targets)
        loss.backward()
        self.optim.step()
        return float(loss.detach())

    def loss(self, idx, targets) -> float:
        with self.torch.no_grad():
            return float(self._loss(idx, targets))

    def adapters(self) -> dict:
        from torch_ref.llama_lora import adapters_of

        return adapters_of(self.model, self.config)

    def opt_state(self) -> dict:
        return self.optim.state_dict()

    def load_opt_state(self, state: dict) -> None:
        self.optim.load_state_dict(state)


def make_lora_trainer(backend: str, params: dict, config, adapters: dict, alpha: float, betas=(0.9, 0.999),
                      eps: float = 1e-8, weight_decay: float = 0.0):
    """A trainer with step(idx, targets, lr) -> loss before the update, loss(idx, targets) -> float,
    adapters() -> NumPy dict. params and adapters: NumPy arrays in the dtype to train in."""
    opt = {"betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
    cls = {"numpy": _NumpyTrainer, "jax": _JaxTrainer, "torch": _TorchTrainer}[backend]
    return cls(params, config, adapters, alpha, opt)
