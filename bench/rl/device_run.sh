#!/usr/bin/env bash
# One call on a lent GPU machine (16 cores, one H200; docs/BENCHMARKS.md "GPU"): the production-size RL step
# (bench/rl/rl_gpu.py: FLUX.1-Fill-sized transformer + Qwen2.5-VL-7B-sized judge, random weights, LoRA, bf16) on
# the GPU, and beside it the RL sweeps of docs/ABLATIONS.md on the machine's CPU cores, one variant a core.
#
#   bash bench/rl/device_run.sh                    # on the device (see below for what must travel with it)
#   DEVICE_SMOKE=1 bash bench/rl/device_run.sh     # here, on CPU, in a minute: the same script at toy sizes
#
# What it needs there: the checkout, the wheels that machine lacks in .whl/ (diffusers, transformers and the
# hub at the versions pinned here, omegaconf/antlr for steps.config; `pip download` lines in docs/BENCHMARKS.md),
# and the run's fine-tuned judge in outputs/tiny/judge (for the judge-reward variants). The tiny datasets are
# rebuilt there (deterministic, 20 s). Results go to $OUT (sweep.json, rl_gpu.json, logs).
set -u
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MLFLOW_DISABLE_TELEMETRY=true \
  DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY=${PY:-python3}
CHECK="import diffusers, omegaconf, transformers; from transformers import Qwen2_5_VLForConditionalGeneration; import steps.rl.grpo"
if [ -d .whl ] && [ -z "${DEVICE_SMOKE:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site:$PWD
  if ! $PY -c "$CHECK" 2> "$OUT/import_error.txt"; then  # the machine's own transformers/hub, ours for the rest
    echo "imports failed with the carried transformers: $(tail -1 "$OUT/import_error.txt"); trying the machine's"
    rm -rf /tmp/site
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      .whl/diffusers-*.whl .whl/omegaconf-*.whl .whl/antlr4*.whl || exit 3
    $PY -c "$CHECK" || exit 3
  fi
else
  export PYTHONPATH=$PWD
fi
$PY - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import importlib, torch
for name in ("torch", "diffusers", "transformers", "accelerate", "peft", "omegaconf", "huggingface_hub"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # noqa: BLE001
        print(name, "MISSING", repr(e))
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import os; print("cores", os.cpu_count())
EOF

if [ -n "${DEVICE_SMOKE:-}" ]; then  # toy sizes: the same commands in a minute on CPU
  PROFILE=smoke; MINUTES=0.3; STEPS=4; EVERY=2; PER_TASK=2; PAR=2
  GPU_ARGS="--size tiny --device cpu --steps 1 --warmup 0"
  DATA=$OUT/data; $PY -m steps.data.datasets world --profile smoke --out "$DATA" > "$OUT/data.log" 2>&1
  BASE=$OUT/models/base; JUDGE=$OUT/models/judge
  $PY - "$OUT/models" <<'EOF' >> "$OUT/data.log" 2>&1
import sys
from pathlib import Path
from steps.models.judge import Judge
from steps.models.judge_spec import spec_for as judge_spec
from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for
from steps.preferences import QUERY_TEMPLATE
root = Path(sys.argv[1])
save_pipeline(build_tiny_fill_pipeline(spec_for("smoke"), seed=0), root / "base", spec_for("smoke"))
Judge.build(judge_spec("smoke"), seed=0, corpus=[QUERY_TEMPLATE]).save(root / "judge")
EOF
else
  PROFILE=tiny; MINUTES=${MINUTES:-6}; STEPS=100000; EVERY=${EVERY:-25}; PER_TASK=16; PAR=${PAR:-14}
  GPU_ARGS="--steps 3 --warmup 1"
  DATA=$PWD/data/tiny; $PY -m steps.data.datasets world --profile tiny --out "$DATA" > "$OUT/data.log" 2>&1 \
    || { echo "datasets failed"; tail -20 "$OUT/data.log"; exit 4; }
  BASE=foundations/tiny/base; JUDGE=outputs/tiny/judge
fi

# the production-size step on the GPU, in the background
( $PY bench/rl/rl_gpu.py $GPU_ARGS --out "$OUT/rl_gpu.json" > "$OUT/rl_gpu.log" 2>&1; echo "rl_gpu exit $?" >> "$OUT/rl_gpu.log" ) &
GPU_PID=$!

COMMON="cpu=true,reward=oracle,train_dir=$DATA/train,eval_dir=$DATA/validation,guard_per_task=$PER_TASK"
[ -n "$BASE" ] && COMMON="$COMMON,base_dir=$BASE"
G="update=grpo,batch_size=4,group_size=8"
VARIANTS=(
  "one_step:lr=3e-5"
  "grpo_lr1e-5:$G,lr=1e-5"
  "grpo_lr3e-5:$G,lr=3e-5"
  "grpo_lr1e-4:$G,lr=1e-4"
  "grpo_shared_lr3e-5:$G,lr=3e-5,group_noise=shared"
  "grpo_shared_lr1e-4:$G,lr=1e-4,group_noise=shared"
  "grpo_start2:$G,lr=3e-5,sde_window_start=2"
  "grpo_k4:$G,lr=3e-5,sde_window=4"
  "grpo_a1:$G,lr=3e-5,sde_a=1.0"
  "grpo_ppo2:$G,lr=3e-5,inner_epochs=2"
  "grpo_kl:$G,lr=1e-4,kl_beta=0.01"
)
if [ -n "$JUDGE" ] && [ -d "$JUDGE" ]; then
  VARIANTS+=("judge_one_step:reward=judge,judge_dir=$JUDGE,lr=3e-5"
             "judge_grpo_lr3e-5:reward=judge,judge_dir=$JUDGE,$G,lr=3e-5"
             "judge_grpo_lr1e-4:reward=judge,judge_dir=$JUDGE,$G,lr=1e-4")
fi
ARGS=()
for v in "${VARIANTS[@]}"; do ARGS+=(--variant "$v"); done
$PY bench/rl/rl_sweep.py --profile $PROFILE --work /tmp/sweep --steps $STEPS --guard-every $EVERY \
  --minutes $MINUTES --parallel $PAR --set "$COMMON" --out "$OUT/sweep.json" "${ARGS[@]}" > "$OUT/sweep.log" 2>&1
echo "sweep exit $?"
grep -v "it/s\]\|step/s\]" "$OUT/sweep.log" | tail -60
wait $GPU_PID
tail -30 "$OUT/rl_gpu.log"
