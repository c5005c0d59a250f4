#!/usr/bin/env bash
# The sweep (benchmarks/sweep.py) split over one process per strategy plus one for the centralized
# bound, on a machine with a CUDA GPU and many cores, within a time budget.
#
#   BUDGET_S=480 SETTINGS=sst2-a5.0 CARRY=.devcarry OUT=/somewhere bash benchmarks/gpu_sweep.sh
#
# CARRY holds what a fresh GPU machine lacks: minilm/ (config and tokenizer files of the bundled
# all-MiniLM-L6-v2), minilm_fp16.safetensors (its weights, stored as fp16 to fit a transfer limit and
# cast back to fp32 here: a relative rounding of at most 2^-11 per weight) and data/ (the labelled
# data, as ../shared/data). Every finished run is appended to its shard's runs-<setting>.jsonl; when the budget
# runs out the shards stop and what finished is collected into $OUT/runs-<setting>.jsonl, from which
# `fedhft bench sweep --report-only --resume` rebuilds the tables on any machine.
set -u
CARRY=${CARRY:-.devcarry}
SETTINGS=${SETTINGS:-sst2-a5.0}
BUDGET_S=${BUDGET_S:-480}
WORK=${WORK:-/tmp/fedhft-sweep}
STRATEGIES=${STRATEGIES:-fedavg-lora hetlora flexlora heterofl legend heterotune fedhft local-only}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$WORK" "$OUT"
python3 - "$CARRY" "$WORK/minilm" <<'EOF' || exit 1
import shutil, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file, save_file
carry, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(carry / "minilm", dst, dirs_exist_ok=True)
weights = load_file(str(carry / "minilm_fp16.safetensors"))
save_file({k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in weights.items()},
          str(dst / "model.safetensors"))
print(f"MiniLM: {len(weights)} tensors cast back to fp32 in {dst}")
EOF
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# Many small processes on one GPU: with the MPS daemon their kernels run concurrently instead of
# time-slicing the GPU between contexts. Optional: without it the shards still run.
nvidia-cuda-mps-control -d 2>/dev/null && echo "MPS daemon started" || echo "no MPS daemon: contexts time-slice"
# A short run first: a machine whose packages cannot run the sweep fails here in seconds.
timeout 180 python3 -m benchmarks.sweep --quick --strategies fedhft --central no --out "$WORK.check" \
  model="$WORK/minilm" data_root="$CARRY/data" > "$WORK.check.log" 2>&1 \
  || { tail -n 40 "$WORK.check.log"; cp "$WORK.check.log" "$OUT/"; exit 1; }
echo "check run passed"
COMMON_ARGS=(--settings "$SETTINGS" --resume model="$WORK/minilm" data_root="$CARRY/data")
for s in $STRATEGIES; do
  timeout "$BUDGET_S" python3 -m benchmarks.sweep --strategies "$s" --central no --out "$WORK/$s" \
    "${COMMON_ARGS[@]}" > "$WORK/$s.log" 2>&1 &
done
timeout "$BUDGET_S" python3 -m benchmarks.sweep --central only --out "$WORK/central" "${COMMON_ARGS[@]}" \
  > "$WORK/central.log" 2>&1 &
wait
for f in "$WORK"/*/runs-*.jsonl; do [ -e "$f" ] && cat "$f" >> "$OUT/$(basename "$f")"; done
cp "$WORK/central/centralized.json" "$OUT/centralized.json" 2>/dev/null
for f in "$WORK"/*.log; do echo "== $f"; grep -v -E "Warning|warn|_pytree|torchao" "$f" | tail -n 15; done > "$OUT/logs.txt"
echo "runs finished: $(cat "$OUT"/runs-*.jsonl 2>/dev/null | wc -l)"
echo quit | nvidia-cuda-mps-control 2>/dev/null || true
