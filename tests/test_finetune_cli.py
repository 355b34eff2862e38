"""`python cli.py finetune ...` end to end in a subprocess: a tiny run from local files, predict,
and the user mistakes that must print one line and exit 2 (unknown model, missing data, bad flags)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_finetune import make_tiny_model, sentiment_texts

REPO = Path(__file__).resolve().parents[1]


def cli(*args, env_extra=None, timeout=240):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "COLUMNS": "150", **(env_extra or {})}
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "finetune", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def sst2_files(tmp_path_factory):
    """A local copy in the hub's sst2 schema (idx, sentence, label)."""
    root = tmp_path_factory.mktemp("sst2")
    files = {}
    for split, n, seed in (("train", 40, 1), ("validation", 12, 2)):
        ds = sentiment_texts(n, seed)
        rows = [{"idx": i, "sentence": t, "label": y} for i, (t, y) in enumerate(zip(ds.texts, ds.labels))]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[split] = str(root / f"{split}.jsonl")
    return ",".join(f"{k}={v}" for k, v in files.items())


def test_train_then_predict_from_the_command_line(tmp_path, sst2_files):
    model = make_tiny_model(tmp_path / "tiny-bert", "bert")
    out = tmp_path / "run"
    proc = cli("train", "--task", "sst2", "--data-files", sst2_files, "--model", model, "--epochs", "2",
               "--batch-size", "8", "--max-length", "16", "--lr", "1e-2", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    saved = json.loads((out / "results.json").read_text())
    assert result["test_acc"] == saved["test_acc"] and len(saved["history"]) == 2
    assert result["trainable_params"] == result["total_params"]  # full fine-tuning
    proc = cli("predict", "--checkpoint", str(out / "best"), "the tea was great", "stale bland cookies", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["text"] for r in rows] == ["the tea was great", "stale bland cookies"]
    for r in rows:
        assert r["label"] in ("negative", "positive") and abs(sum(r["probs"].values()) - 1) < 1e-6
        assert r["label"] == max(r["probs"], key=r["probs"].get)


def test_unknown_model_is_one_line_exit_2(tmp_path, sst2_files):
    proc = cli("train", "--task", "sst2", "--data-files", sst2_files, "--model", "no-such-org/no-such-model",
               "--out", str(tmp_path / "x"))
    assert_one_line_error(proc, "no-such-org/no-such-model", "minilm")


def test_missing_data_says_how_to_fetch(tmp_path):
    proc = cli("train", "--out", str(tmp_path / "x"), env_extra={"TRIPTYCH_DATA": str(tmp_path / "empty")})
    assert_one_line_error(proc, "fine-foods", "-m triptych.corpora.fetch --only fine-foods")


@pytest.mark.parametrize("args,fragment", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--method", "adapter"], "--method"),
    (["train", "--data-files", "nonsense"], "--data-files"),
    (["study", "optimizers", "--optimizers", "adamw,lion"], "lion"),
    (["predict", "--checkpoint", "/nonexistent/best", "some text"], "checkpoint"),
])
def test_bad_arguments_are_one_line_exit_2(args, fragment):
    assert_one_line_error(cli(*args), fragment)


def test_gpu_script_is_valid_bash_and_its_commands_parse():
    """docs/examples/gpu_finetune.sh runs where a GPU is (not here): its shell must parse, and every
    `cli.py` line in it must be accepted by the CLI's own parser, so a flag renamed here fails here."""
    import shlex

    from triptych.cli import build_parser

    script = Path(__file__).resolve().parents[1] / "docs" / "examples" / "gpu_finetune.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text().replace("\\\n", " ")
    lines = [line.split("cli.py", 1)[1].split(">")[0] for line in text.splitlines() if '"$PY" cli.py' in line]
    assert len(lines) == 2  # finetune train (in the loop), bench finetune
    values = {"$method": "lora", "$precision": "bf16", "$OUT_DIR": "runs/gpu"}
    for line in lines:
        for var, value in values.items():
            line = line.replace(var, value)
        args = build_parser().parse_args(shlex.split(line))
        assert callable(args.func)
