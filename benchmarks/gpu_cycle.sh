#!/usr/bin/env bash
# One GPU session of the default's 640-px cycle (docs/training.md, "One GPU, sized to a lease"), sized to a time
# budget: a short smoke run measures images/s on this machine, then one cosine cycle of as many
# iterations as fit in the budget runs from the bundled weights, then the logs and the
# checkpoints (optimizer state stripped) are packed into OUT. Run from the repository root with
# the shrunk training set in runs/gpu_data (`python benchmarks/train_default.py shrink`):
#
#     BUDGET=540 OUT=runs/gpu_out bash benchmarks/gpu_cycle.sh
#
# BUDGET is the seconds this script may take in all; it ends a little before that. DATA (the
# shrunk set, runs/gpu_data) and WORK (where the work dirs go, runs) can be moved; EXTRA adds
# `train_default.py gpu` options to both runs (tests/test_gpu_cycle_script.py: a CPU dry run).
set -uo pipefail
BUDGET=${BUDGET:-540}
OUT=${OUT:-runs/gpu_out}
PY=${PY:-python3}
SMOKE_ITERS=${SMOKE_ITERS:-80}
EXTRA=${EXTRA:-}   # more `train_default.py gpu` options, e.g. "--device cpu --batch-size 4"
BATCH=${BATCH:-64}
RESERVE=${RESERVE:-35}   # seconds kept for the cycle's start-up (20) and the packing (15)
DATA=${DATA:-runs/gpu_data}
WORK=${WORK:-runs}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T0=$(date +%s)
mkdir -p "$OUT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
TD="$ROOT/benchmarks/train_default.py"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'cv2', cv2.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/gpu.txt"
(nvidia-smi dmon -s um -d 2 > "$OUT/dmon.log" 2>&1 || true) &
DMON=$!
trap 'kill $DMON 2>/dev/null' EXIT

# 1. smoke run: images/s from the second half of its windows (the loader's prefetch drained)
$PY "$TD" gpu --train "$DATA" --work-dir "$WORK/gpu-smoke" --max-iters "$SMOKE_ITERS" \
    --batch-size "$BATCH" --force $EXTRA || exit 1
cp "$WORK/gpu-smoke/log.jsonl" "$OUT/smoke_log.jsonl"
IPS=$($PY - "$WORK/gpu-smoke/log.jsonl" <<'EOF'
import json, sys
recs = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
last = max(r["iter"] for r in recs if r.get("mode") == "train")
win = [r for r in recs if r.get("mode") == "train" and r["iter"] > last // 2]
print(sum(r["images_per_s"] for r in win) / len(win))
EOF
)
# 2. the cycle: iterations that fit in what is left
LEFT=$(( BUDGET - ($(date +%s) - T0) - RESERVE ))
ITERS=$($PY -c "print(max(0, int($LEFT * $IPS * 0.95 / $BATCH)))")
if [ "$ITERS" -lt 1 ]; then
    echo "no time left for the cycle after the smoke run ($LEFT s of BUDGET=$BUDGET)" >&2
    exit 1
fi
IMAGES=$(grep -c '^#' "$DATA/labelv2.txt")
EPOCH_LEN=$(( (IMAGES + BATCH - 1) / BATCH ))
EVERY=$(( (ITERS / EPOCH_LEN + 4) / 5 ))
echo "smoke: $IPS images/s; cycle: $ITERS iterations in $LEFT s, epoch_N.pth every $EVERY epochs"
$PY "$TD" gpu --train "$DATA" --work-dir "$WORK/default-gpu" --epochs 100000 \
    --max-iters "$ITERS" --checkpoint-every "$EVERY" --batch-size "$BATCH" --force $EXTRA \
    --minutes "$($PY -c "print(($LEFT + 15) / 60)")" 2>&1 | tee "$OUT/run.log"
# 3. pack: the log, the last checkpoint whole, the epoch checkpoints without optimizer state
cp "$WORK/default-gpu/log.jsonl" "$WORK/default-gpu/config.json" "$OUT/" 2>/dev/null
cp "$WORK/default-gpu/latest.pth" "$OUT/latest.pth" 2>/dev/null
$PY - "$WORK" "$OUT" <<'EOF'
import glob, os, sys, tarfile, torch
work, out = sys.argv[1:]
with tarfile.open(f"{out}/epochs.tar", "w") as t:
    for p in sorted(glob.glob(f"{work}/default-gpu/epoch_*.pth")):
        c = torch.load(p, map_location="cpu", weights_only=False)
        slim = f"{work}/gpu-pack/{os.path.basename(p)}"
        os.makedirs(os.path.dirname(slim), exist_ok=True)
        torch.save({k: c[k] for k in ("meta", "state_dict")}, slim)
        t.add(slim, arcname=os.path.basename(p))
EOF
ls -la "$OUT"
