"""Building blocks: a correct submission passes, and each planted mistake is named."""
from __future__ import annotations

import textwrap

import pytest

from triptych.crosscheck import check
from triptych.crosscheck.exercises import get_group

GOOD = '''
import math
import numpy as np

def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)

def layer_norm(x, weight, bias, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * weight + bias

def gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

def cross_entropy(logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -logp[np.arange(len(targets)), np.where(keep, targets, 0)]
    return np.asarray((nll * keep).sum() / keep.sum(), dtype=logits.dtype)

def softmax_backward(dy, y, axis=-1):
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))
'''

PLANTED = {
    "softmax_wrong_axis": ("softmax", "def softmax(x, axis=-1):\n    e = np.exp(x - x.max(0))\n    return e / e.sum(0)\n"),
    "softmax_no_max_shift": ("softmax", "def softmax(x, axis=-1):\n    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)\n"),
    "ln_unbiased_variance": ("layer_norm", """
        def layer_norm(x, weight, bias, eps=1e-5):
            return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) * weight + bias
        """),
    "ln_eps_outside_sqrt": ("layer_norm", """
        def layer_norm(x, weight, bias, eps=1e-5):
            return (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + eps) * weight + bias
        """),
    "gelu_erf_not_tanh": ("gelu", """
        from math import erf
        def gelu(x):
            return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))
        """),
    "ce_sum_not_mean": ("cross_entropy", """
        def cross_entropy(logits, targets, ignore_index=-100):
            keep = targets != ignore_index
            z = logits - logits.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            return np.asarray(-(logp[np.arange(len(targets)), np.where(keep, targets, 0)] * keep).sum(), dtype=logits.dtype)
        """),
    "ce_divided_by_all": ("cross_entropy", """
        def cross_entropy(logits, targets, ignore_index=-100):
            keep = targets != ignore_index
            z = logits - logits.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            nll = -logp[np.arange(len(targets)), np.where(keep, targets, 0)]
            return np.asarray((nll * keep).mean(), dtype=logits.dtype)
        """),
    "softmax_bwd_diagonal_only": ("softmax_backward", "def softmax_backward(dy, y, axis=-1):\n    return y * dy\n"),
}


def _ns(source: str) -> dict:
    ns: dict = {}
    exec(compile(GOOD + "\n" + textwrap.dedent(source), "<planted>", "exec"), ns)
    return ns


def test_every_blocks_variant_has_a_planted_test():
    assert {v.name for ex in get_group("blocks") for v in ex.variants} == set(PLANTED)


def test_correct_blocks_pass():
    ns = _ns("")
    for ex in get_group("blocks"):
        report = check(ex.name, ns[ex.defines], framework="numpy")
        assert report.ok, str(report)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow the naive softmax is about
@pytest.mark.parametrize("variant", sorted(PLANTED))
def test_planted_mistake_is_named(variant):
    exercise, source = PLANTED[variant]
    report = check(exercise, _ns(source)[exercise], framework="numpy")
    assert not report.ok and variant in report.mistakes, str(report)


TORCH = '''
import torch
import torch.nn.functional as F

def softmax(x, axis=-1):
    return torch.softmax(x, dim=axis)

def layer_norm(x, weight, bias, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)

def gelu(x):
    return F.gelu(x, approximate="tanh")

def cross_entropy(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)

def softmax_backward(dy, y, axis=-1):
    return y * (dy - (dy * y).sum(dim=axis, keepdim=True))
'''


def test_torch_submission_passes_in_the_sandbox(tmp_path):
    from triptych.crosscheck.session import check_file

    path = tmp_path / "blocks_torch.py"
    path.write_text(TORCH)
    report = check_file(str(path))
    assert report.framework == "torch" and len(report.rows) == sum(len(ex.cases) for ex in get_group("blocks"))
    assert report.ok, [(r["exercise"], r["case"], r["message"]) for r in report.rows if not r["ok"]]
