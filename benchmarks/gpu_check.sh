#!/usr/bin/env bash
# One short check of the CUDA path on a GPU machine (no internet needed, nothing is installed).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# 1. the trainer and sampler-contract tests (CPU, as in CI) - they must pass on that machine too;
# 2. every sampler with every model (gmf, mf, lightgcn) trains 2 epochs end to end on the simulator's
#    `tiny` preset with --device cuda;
# 3. `reinforcens bench --preset small --device cuda --repeats 3 --methods bpr,dns,rns30,rns30fast,eval_lists
#    --model M` for each model M -> $OUT/bench_gpu_small_M.json;
# 4. `reinforcens bench --preset zhihu --device cuda --repeats 3` (GMF) -> $OUT/bench_gpu.json
#    (implicit's BPR runs on the CPU in the same run, for the ratios).
#
# The zhihu preset is generated and prepared on first use (about 3 minutes of the budget). Its cache is
# runs/bench-cache (git-ignored); carrying runs/bench-cache/zhihu-seed0/sim (41 MB) to the machine skips
# the simulation step. Each step has its own time limit (100 s, 100 s, 3 x 70 s, 240 s: about eleven
# minutes in all, of which the zhihu simulation is three unless carried); a step that fails or times
# out is reported and the next one still runs. Needs torch with CUDA and the package's dependencies in
# the chosen interpreter; implicit is optional (its column is skipped without it).
set -u
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
CACHE="${BENCH_CACHE:-runs/bench-cache}"
# the first interpreter whose torch sees a GPU (override with PYTHON=...); the package from src/
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for c in python3 python .venv/bin/python; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
            PY="$c"; break
        fi
    done
fi
PY="${PY:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
status=0
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }

log "machine: $(nproc) cores; $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")')"
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader 2>/dev/null | tee -a "$OUT/gpu_check.log"

log "1/3 tests (tests/test_train.py tests/test_sampler_contract.py)"
timeout 100 "$PY" -m pytest tests/test_train.py tests/test_sampler_contract.py -x -q -p no:cacheprovider \
    >"$OUT/tests.log" 2>&1
rc=$?; tail -3 "$OUT/tests.log" | tee -a "$OUT/gpu_check.log"; log "tests exit $rc"; [ $rc -eq 0 ] || status=1

log "2/4 every sampler x every model, 2 epochs on tiny, --device cuda"
timeout 100 "$PY" - "$OUT" >"$OUT/cuda_smoke.log" 2>&1 <<'EOF'
import json, math, sys, tempfile
from pathlib import Path

from reinforcens.config import TrainConfig
from reinforcens.data.formats import read_log
from reinforcens.data.prepared import load_prepared, prepare, save_prepared
from reinforcens.data.simulate import write_simulation
from reinforcens.samplers import SAMPLERS
from reinforcens.train import Trainer

tmp = Path(tempfile.mkdtemp())
write_simulation(tmp / "sim", "tiny", seed=0)
data = prepare(read_log(tmp / "sim" / "log.parquet", "table"), min_sessions=4, list_length=40, seed=0)
save_prepared(data, tmp / "prep", extra_files={"ground_truth.npz": tmp / "sim" / "ground_truth.npz"})
data = load_prepared(tmp / "prep")
out = {}
for model in ("gmf", "mf", "lightgcn"):
    for name in sorted(SAMPLERS):
        cfg = TrainConfig.build(
            sampler=name, model=model, device="cuda", epochs=2, pretrain_epochs=2, batch_size=512
        )
        m = Trainer(data, cfg, None, progress=False).fit()
        key = f"{model}/{name}"
        out[key] = {k: m[k] for k in ("valid.auc", "test.auc", "test.true_auc")}
        ok = all(0.0 <= v <= 1.0 and math.isfinite(v) for v in out[key].values())
        print(key, out[key], "ok" if ok else "BAD", flush=True)
        assert ok, key
Path(sys.argv[1], "cuda_smoke.json").write_text(json.dumps(out, indent=2))
EOF
rc=$?; cat "$OUT/cuda_smoke.log" | tail -30 | tee -a "$OUT/gpu_check.log"; log "cuda smoke exit $rc"; [ $rc -eq 0 ] || status=1

for model in gmf mf lightgcn; do
    log "3/4 bench --preset small --device cuda --model $model"
    timeout 70 "$PY" -m reinforcens bench --preset small --device cuda --repeats 3 --model "$model" \
        --methods bpr,dns,rns30,rns30fast,eval_lists --cache "$CACHE" --out "$OUT/bench_gpu_small_$model.json" 2>&1 \
        | tee "$OUT/bench_small_$model.log" | grep -v "^run " | tee -a "$OUT/gpu_check.log"
    rc=${PIPESTATUS[0]}; log "bench small $model exit $rc"; [ $rc -eq 0 ] || status=1
done

log "4/4 bench --preset zhihu --device cuda --repeats 3"
timeout 240 "$PY" -m reinforcens bench --preset zhihu --device cuda --repeats 3 --cache "$CACHE" \
    --out "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench.log" | grep -v "^run " | tee -a "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}; log "bench exit $rc"; [ $rc -eq 0 ] || status=1

log "done (status $status); results in $OUT"
exit $status
