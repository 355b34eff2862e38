#!/usr/bin/env bash
# Fine-tuning on one GPU, in one go: fine-foods with MiniLM (full and LoRA) in bf16 autocast and in
# float32, then `bench finetune`. Prints one summary table (time per epoch, test accuracy) and leaves
# every run's results.json and curves.png under $OUT_DIR (default runs/gpu).
#
#   bash docs/examples/gpu_finetune.sh [OUT_DIR]
#
# Needs the project's environment (`make setup data`) with a CUDA build of torch; the CPU pin of
# requirements.txt gives a torch that sees no GPU, and then every run below says "device cpu".
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT_DIR=${1:-runs/gpu}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1

"$PY" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no GPU: the runs below use the CPU)")
EOF

# The methods study's data sizes (800 / 200 / 400 reviews, 3 epochs, 64 tokens), so the figures sit
# beside the CPU ones in docs/measurements.md.
for method in full lora; do
  for precision in bf16 fp32; do
    "$PY" cli.py finetune train --task fine-foods --method "$method" --precision "$precision" \
      --train-size 800 --val-size 200 --test-size 400 --epochs 3 --max-length 64 --json \
      --out "$OUT_DIR/fine-foods-$method-$precision" > "$OUT_DIR/fine-foods-$method-$precision.json"
  done
done

"$PY" - "$OUT_DIR" <<'EOF'
import json, sys
from pathlib import Path
print(f"{'method':8} {'precision':9} {'device':8} {'s/epoch':>8} {'test acc':>9}")
for f in sorted(Path(sys.argv[1]).glob("fine-foods-*.json")):
    r = json.loads(f.read_text())
    per_epoch = r["train_time_s"] / len(r["history"])
    print(f"{r['method']:8} {r['precision']:9} {r['device']:8} {per_epoch:8.2f} {r['test_acc']:9.2%}")
EOF

"$PY" cli.py bench finetune --rounds 5 --out "$OUT_DIR"
