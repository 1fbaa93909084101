#!/usr/bin/env bash
# CPU time per step, one thread: GRPO / RLOO of rlhfkit against TRL's on the anchor workload,
# in turn. Each side runs 4 and 12 steps in fresh processes; (user + sys of the 12-step run) −
# (user + sys of the 4-step run), over 8, is the CPU time of one step with start-up, model
# loading and the GEMM probes cancelled out. CPU time is what a loaded host inflates least (a
# process that waits for a core is not charged), so this is the measure to read when the
# machine is shared; wall time per step is printed beside it.
#   bash benchmarks/pg_cpu_time.sh grpo [ROUNDS]      # or rloo
# Needs the anchor venv and assets (../shared/bench/run_all.sh builds both under $ANCHOR_HOME).
set -euo pipefail
algo="${1:-grpo}"; rounds="${2:-2}"
A="${ANCHOR_HOME:-$HOME/.cache/rlhfkit-anchors}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="${BENCH_DIR:-$REPO/../shared/bench}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1 OMP_NUM_THREADS=1
tmp="$(mktemp)"
cpu() { /usr/bin/time -f "%U %S %e" -o "$tmp" "$@" >/dev/null 2>&1; cat "$tmp"; }
per_step() { python3 -c "import sys; a=list(map(float,'$1'.split())); b=list(map(float,'$2'.split())); print(f'{(b[0]+b[1]-a[0]-a[1])/8:.2f} {(b[2]-a[2])/8:.2f}')"; }
for r in $(seq "$rounds"); do
  t4=$(cd "$BENCH" && cpu "$A/venv/bin/python" bench_trl.py "$algo" --steps 4 --warmup 2 --threads 1 --assets "$A/assets")
  t12=$(cd "$BENCH" && cpu "$A/venv/bin/python" bench_trl.py "$algo" --steps 12 --warmup 2 --threads 1 --assets "$A/assets")
  o4=$(cd "$REPO" && cpu "$PY" benchmarks/pg_throughput.py --algo "$algo" --precision fp32 --iterations 2 --warmup 2 --threads 1)
  o12=$(cd "$REPO" && cpu "$PY" benchmarks/pg_throughput.py --algo "$algo" --precision fp32 --iterations 10 --warmup 2 --threads 1)
  read -r trl_cpu trl_wall <<<"$(per_step "$t4" "$t12")"
  read -r our_cpu our_wall <<<"$(per_step "$o4" "$o12")"
  python3 -c "print('{\"bench\": \"pg_cpu_time\", \"algo\": \"$algo\", \"round\": $r, \"trl_cpu_s_per_step\": $trl_cpu, \"rlhfkit_cpu_s_per_step\": $our_cpu, \"cpu_ratio\": round($trl_cpu / $our_cpu, 2), \"trl_wall_s_per_step\": $trl_wall, \"rlhfkit_wall_s_per_step\": $our_wall, \"load_avg_1min\": $(cut -d' ' -f1 /proc/loadavg)}')"
done
rm -f "$tmp"
