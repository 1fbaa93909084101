#!/usr/bin/env bash
# CPU time per step, one thread: GRPO / RLOO of rlhfkit against TRL's on the anchor workload,
# in turn. Each side runs 4 and 12 steps in fresh processes; (user + sys of the 12-step run) −
# (user + sys of the 4-step run), over 8, is the CPU time of one step with start-up, model
# loading and the GEMM probes cancelled out. CPU time is what a loaded host inflates least (a
# process that waits for a core is not charged), so this is the measure to read when the
# machine is shared; wall time per step is printed beside it.
#   TRL_RUNNER="CMD" bash benchmarks/pg_cpu_time.sh grpo [ROUNDS]      # or rloo
# TRL_RUNNER: the command that runs TRL's trainer on the anchor assets, called as
#   $TRL_RUNNER ALGO --steps N --warmup 2 --threads 1 --assets DIR
# (TRL is not a dependency of rlhfkit; install it in its own environment). The assets are
# runs/bench_assets, built by `python -m benchmarks.assets` when absent.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,12p' "${BASH_SOURCE[0]}" | cut -c3-
  exit 0
fi
algo="${1:-grpo}"; rounds="${2:-2}"
: "${TRL_RUNNER:?set TRL_RUNNER to the command that runs TRL on the anchor assets (see --help)}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
ASSETS="$REPO/runs/bench_assets"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1 OMP_NUM_THREADS=1
[ -f "$ASSETS/manifest.json" ] || (cd "$REPO" && "$PY" -m benchmarks.assets --out "$ASSETS")
tmp="$(mktemp)"
cpu() { /usr/bin/time -f "%U %S %e" -o "$tmp" "$@" >/dev/null 2>&1; cat "$tmp"; }
per_step() { python3 -c "import sys; a=list(map(float,'$1'.split())); b=list(map(float,'$2'.split())); print(f'{(b[0]+b[1]-a[0]-a[1])/8:.2f} {(b[2]-a[2])/8:.2f}')"; }
for r in $(seq "$rounds"); do
  # shellcheck disable=SC2086  # TRL_RUNNER is a command line
  t4=$(cpu $TRL_RUNNER "$algo" --steps 4 --warmup 2 --threads 1 --assets "$ASSETS")
  # shellcheck disable=SC2086
  t12=$(cpu $TRL_RUNNER "$algo" --steps 12 --warmup 2 --threads 1 --assets "$ASSETS")
  o4=$(cd "$REPO" && cpu "$PY" -m benchmarks.pg_throughput --algo "$algo" --precision fp32 --iterations 2 --warmup 2 --threads 1)
  o12=$(cd "$REPO" && cpu "$PY" -m benchmarks.pg_throughput --algo "$algo" --precision fp32 --iterations 10 --warmup 2 --threads 1)
  read -r trl_cpu trl_wall <<<"$(per_step "$t4" "$t12")"
  read -r our_cpu our_wall <<<"$(per_step "$o4" "$o12")"
  python3 -c "print('{\"bench\": \"pg_cpu_time\", \"algo\": \"$algo\", \"round\": $r, \"trl_cpu_s_per_step\": $trl_cpu, \"rlhfkit_cpu_s_per_step\": $our_cpu, \"cpu_ratio\": round($trl_cpu / $our_cpu, 2), \"trl_wall_s_per_step\": $trl_wall, \"rlhfkit_wall_s_per_step\": $our_wall, \"load_avg_1min\": $(cut -d' ' -f1 /proc/loadavg)}')"
done
rm -f "$tmp"
