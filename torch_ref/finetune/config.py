"""Training settings as plain data, importable without torch (the CLI builds its flags from them).

ModelSpec lives here, not in models.py, because TrainConfig.spec() builds one and models.py needs the
method names: plain data on this side, torch on that side, and the imports go one way only."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from triptych.common.checks import InputError

__all__ = ["METHODS", "OPTIMIZERS", "PRECISIONS", "BACKENDS", "DEFAULT_LR", "DEFAULT_MODEL", "GRID_LRS", "GRID_EPOCHS",
           "STUDY_OPTIMIZERS", "ModelSpec", "TrainConfig"]

METHODS = ("full", "head", "prefix", "lora")
DEFAULT_MODEL = "minilm"
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop", "adagrad")
# auto: bf16 autocast on a GPU, float32 elsewhere; fp32 / bf16 force one (bf16 autocast runs on CPUs too).
PRECISIONS = ("auto", "fp32", "bf16")
# A frozen encoder leaves few, freshly initialised weights to move: they want a larger step.
# Measured on fine-foods with MiniLM, 3 epochs, max_length 64 (test accuracy, majority 64.25%):
# lora 5e-4 stayed at the majority class with 800 examples, 2e-3 reached 80.0%; head 2e-3 stayed
# near it with 400, 1e-2 reached 74.8% with 800; prefix 2e-3 gave 69.0%, 1e-2 72.8% with 400.
DEFAULT_LR = {"full": 5e-5, "lora": 2e-3, "head": 1e-2, "prefix": 1e-2}

# What `finetune study grid` and `study optimizers` try when no flag says otherwise (studies.py);
# here, beside the other defaults, so the CLI's help states them without importing torch.
GRID_LRS = (1e-4, 5e-4, 1e-3)
GRID_EPOCHS = (7, 9)
STUDY_OPTIMIZERS = ("adamw", "sgd", "rmsprop")
# Who trains (`finetune train --backend`): torch (HF + peft + accelerate) or our engines, numpy / jax
# (triptych/training/bert_classify.py). Recorded in run.json, so --resume keeps it.
BACKENDS = ("torch", "numpy", "jax")


@dataclass
class ModelSpec:
    """Everything needed to rebuild a classifier: saved in every checkpoint."""

    model: str = DEFAULT_MODEL  # "minilm", a Hugging Face id or a local folder
    method: str = "full"
    n_classes: int = 2
    prefix_length: int = 128
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    pretrained: bool = True  # False: the same architecture from random init

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    task: str = "fine-foods"
    model: str = DEFAULT_MODEL
    method: str = "full"
    backend: str = "torch"  # BACKENDS; run.json files without it are torch runs
    epochs: int = 3
    batch_size: int = 16
    lr: float | None = None  # None: DEFAULT_LR[method]
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9  # SGD and RMSprop
    warmup: float = 0.1  # fraction of all steps spent ramping the learning rate up from 0
    max_grad_norm: float = 1.0
    max_length: int = 128
    train_size: int | None = None  # a seeded random subset of the training split (None = all)
    val_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    prefix_length: int = 128
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    pretrained: bool = True
    out: str = "runs/finetune/default"
    resume: bool = False
    save_checkpoints: bool = True
    data_files: dict | None = None  # Hugging Face tasks from local files
    precision: str = "auto"  # PRECISIONS: the torch backend's autocast

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.backend not in BACKENDS:
            raise InputError(f"backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("train_size", "val_size", "test_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name}: expected a positive integer or None (all), got {value!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        if not self.lr > 0:
            raise InputError(f"lr: expected a positive number, got {self.lr!r}")
        if not 0 <= self.warmup < 1:
            raise InputError(f"warmup: expected a fraction in [0, 1), got {self.warmup!r}")

    def spec(self, n_classes: int):
        """The ModelSpec (what a checkpoint needs to rebuild the model) for a task with n_classes."""
        return ModelSpec(self.model, self.method, n_classes, self.prefix_length, self.lora_r,
                         self.lora_alpha, self.lora_dropout, self.pretrained)
