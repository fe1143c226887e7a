#!/usr/bin/env bash
# One GPU session of the default's 640-px cycle (docs/training.md, "On a GPU"), sized to a time
# budget: a short smoke run measures images/s on this machine, then one cosine cycle of as many
# iterations as fit in the budget runs from the bundled weights, then the logs and the
# checkpoints (optimizer state stripped) are packed into OUT. Run from the repository root with
# the shrunk training set in runs/gpu_data (`python benchmarks/train_default.py shrink`):
#
#     BUDGET=540 OUT=runs/gpu_out bash benchmarks/gpu_cycle.sh
#
# BUDGET is the seconds this script may take in all; it ends a little before that.
set -uo pipefail
BUDGET=${BUDGET:-540}
OUT=${OUT:-runs/gpu_out}
PY=${PY:-python3}
SMOKE_ITERS=${SMOKE_ITERS:-80}
EXTRA=${EXTRA:-}   # more `train_default.py gpu` options, e.g. "--device cpu --batch-size 4"
BATCH=${BATCH:-64}
T0=$(date +%s)
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'cv2', cv2.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/gpu.txt"
nvidia-smi dmon -s um -d 2 > "$OUT/dmon.log" 2>&1 &
DMON=$!
trap 'kill $DMON 2>/dev/null' EXIT

# 1. smoke run: images/s from the second half of its windows (the loader's prefetch drained)
$PY benchmarks/train_default.py gpu --work-dir runs/gpu-smoke --max-iters "$SMOKE_ITERS" \
    --batch-size "$BATCH" --force $EXTRA || exit 1
cp runs/gpu-smoke/log.jsonl "$OUT/smoke_log.jsonl"
IPS=$($PY - <<'EOF'
import json
recs = [json.loads(x) for x in open("runs/gpu-smoke/log.jsonl") if x.strip()]
last = max(r["iter"] for r in recs if r.get("mode") == "train")
win = [r for r in recs if r.get("mode") == "train" and r["iter"] > last // 2]
print(sum(r["images_per_s"] for r in win) / len(win))
EOF
)
# 2. the cycle: iterations that fit in what is left (20 s for start-up, 15 s for packing)
LEFT=$(( BUDGET - ($(date +%s) - T0) - 35 ))
ITERS=$($PY -c "print(int($LEFT * $IPS * 0.95 / $BATCH))")
IMAGES=$(grep -c '^#' runs/gpu_data/labelv2.txt)
EPOCH_LEN=$(( (IMAGES + BATCH - 1) / BATCH ))
EVERY=$(( (ITERS / EPOCH_LEN + 4) / 5 ))
echo "smoke: $IPS images/s; cycle: $ITERS iterations in $LEFT s, epoch_N.pth every $EVERY epochs"
$PY benchmarks/train_default.py gpu --work-dir runs/default-gpu --epochs 100000 \
    --max-iters "$ITERS" --checkpoint-every "$EVERY" --batch-size "$BATCH" --force $EXTRA \
    --minutes "$($PY -c "print(($LEFT + 15) / 60)")" 2>&1 | tee "$OUT/run.log"
# 3. pack: the log, the last checkpoint whole, the epoch checkpoints without optimizer state
cp runs/default-gpu/log.jsonl runs/default-gpu/config.json "$OUT/" 2>/dev/null
cp runs/default-gpu/latest.pth "$OUT/latest.pth" 2>/dev/null
$PY - <<'EOF'
import glob, os, tarfile, torch
os.makedirs("runs/gpu-pack", exist_ok=True)
for p in sorted(glob.glob("runs/default-gpu/epoch_*.pth")):
    c = torch.load(p, map_location="cpu", weights_only=False)
    torch.save({k: c[k] for k in ("meta", "state_dict")}, f"runs/gpu-pack/{os.path.basename(p)}")
with tarfile.open(os.environ.get("OUT", "runs/gpu_out") + "/epochs.tar", "w") as t:
    for p in sorted(glob.glob("runs/gpu-pack/*.pth")):
        t.add(p, arcname=os.path.basename(p))
EOF
ls -la "$OUT"
