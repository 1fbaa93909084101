#!/usr/bin/env bash
# One-shot GPU check (≤ 8 minutes on one H100): every stage once on the GPU in bf16 — SFT, RM,
# DPO, PPO, and GRPO with the local sampler and with rollout.engine=vllm — on the simulated
# world's tiny models (built in code: a GPU machine without internet needs no download), or on
# the model in $POLICY when set (a local Hugging Face folder, e.g. SmolLM2-135M-Instruct).
# Prints one table: stage, seconds, exit status, the stage's last headline metric.
#
#     bash benchmarks/gpu/check.sh [OUT]          # OUT defaults to runs/gpu_check
#
# Needs rlhfkit installed with torch's CUDA build; the vLLM row needs vLLM (`rlhfkit[vllm]`)
# and says "skipped" without it. Nothing here runs in the test suite.
set -uo pipefail
OUT="${1:-runs/gpu_check}"
mkdir -p "$OUT"
python - <<'PY' || { echo "gpu check: no CUDA device visible to torch"; exit 2; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
PY
rlhfkit sim make --out "$OUT/sim" --seed 0 >/dev/null
COMMON=(engine.mixed_precision=bf16 engine.device=auto engine.resume=false)
rows=()
run() {  # name, then the command
    local name="$1"; shift
    local t0=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    local headline
    headline=$(python - "$OUT/$name/metrics.jsonl" <<'PY'
import json, sys
from pathlib import Path
p = Path(sys.argv[1])
rows = [json.loads(l) for l in p.read_text().splitlines()] if p.is_file() else []
keys = ("eval/accuracy", "eval/loss", "reward/score_mean", "loss/dpo", "loss/sft", "loss/rm")
last = {k: v for r in rows for k, v in r.items() if k in keys}
print(", ".join(f"{k}={v:.4g}" for k, v in last.items()) or "-")
PY
)
    rows+=("$(printf '%-12s %8s %5s  %s' "$name" "$((SECONDS - t0))s" "$rc" "$headline")")
}
POL="${POLICY:-}"
run sft rlhfkit sft --preset sft_sim "out_dir=$OUT/sft" "data.train=$OUT/sim/sft/train.jsonl" \
    "tokenizer=$OUT/sim/tokenizer" max_steps=200 "${COMMON[@]}" ${POL:+"model.name_or_path=$POL"}
SFT="$OUT/sft/model"
run rm rlhfkit rm --preset rm_sim "out_dir=$OUT/rm" "data.train=$OUT/sim/preferences/train.jsonl" \
    "model.name_or_path=$SFT" max_steps=100 "${COMMON[@]}"
run dpo rlhfkit dpo --preset dpo_sim "out_dir=$OUT/dpo" "data.train=$OUT/sim/preferences/train.jsonl" \
    "model.name_or_path=$SFT" max_steps=50 "${COMMON[@]}"
run ppo rlhfkit ppo --preset ppo_sim "out_dir=$OUT/ppo" "policy.name_or_path=$SFT" \
    "reward_model=$OUT/rm/model" "data.train=$OUT/sim/prompts/train.jsonl" eval_prompts=null iterations=5 "${COMMON[@]}"
run grpo rlhfkit grpo --preset grpo_sim "out_dir=$OUT/grpo" "policy.name_or_path=$SFT" \
    "reward_model=$OUT/rm/model" "data.train=$OUT/sim/prompts/train.jsonl" eval_prompts=null iterations=5 "${COMMON[@]}"
if python -c "import vllm" 2>/dev/null; then
    run grpo_vllm rlhfkit grpo --preset grpo_sim "out_dir=$OUT/grpo_vllm" "policy.name_or_path=$SFT" \
        "reward_model=$OUT/rm/model" "data.train=$OUT/sim/prompts/train.jsonl" eval_prompts=null iterations=5 \
        rollout.engine=vllm rollout.vllm.dtype=bfloat16 "${COMMON[@]}"
else
    rows+=("$(printf '%-12s %8s %5s  %s' grpo_vllm - - 'skipped: vLLM is not installed')")
fi
echo "gpu check on $(python -c 'import torch; print(torch.cuda.get_device_name(0))') (logs in $OUT)"
printf '%-12s %8s %5s  %s\n' stage time exit headline
printf '%s\n' "${rows[@]}"
