"""rlhfkit against TRL on the anchor workload, in turn: for each round and each trainer, TRL's
run, then rlhfkit's eager run, then (with `--compile`) rlhfkit's run with `engine.compile: true`,
each in a fresh process, one after the other, so the three see the same machine. Prints one
JSON line per run as it ends and, at the end, a table: median seconds per step of each side over
the rounds, the ratio TRL / rlhfkit, rlhfkit's compile time apart (`perf/compile_s`: the compiled
run's warm-up steps absorb it; its steady steps are what `s_per_step` reports) and peak RSS.

TRL is not a dependency of rlhfkit: `--trl-python` is the interpreter of an environment with TRL
1.16 (reward, dpo, kto, grpo, rloo) and `--trl-ppo-python` one with TRL 1.12 (its last release
with a PPO trainer); `--trl-bench` is the script that runs TRL's trainers on the anchor assets and
prints one JSON line with `s_per_step` (the anchor benchmark's `bench_trl.py`).

    python -m benchmarks.vs_trl --trl-python ENV/bin/python --trl-ppo-python ENV_PPO/bin/python \
        --trl-bench PATH/bench_trl.py --trainers grpo rloo ppo dpo rm --rounds 2 --compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import ROOT, emit, load_avg

# trainer -> (TRL subcommand, TRL steps, rlhfkit module, rlhfkit args)
PLAN = {
    "rm": ("reward", 24, "benchmarks.rm_throughput", ["--steps", "24"]),
    "dpo": ("dpo", 24, "benchmarks.dpo_throughput", ["--steps", "24", "--reference", "live"]),
    "kto": ("kto", 24, "benchmarks.kto_throughput", ["--steps", "24"]),
    "grpo": ("grpo", 10, "benchmarks.pg_throughput", ["--algo", "grpo", "--iterations", "8"]),
    "rloo": ("rloo", 10, "benchmarks.pg_throughput", ["--algo", "rloo", "--iterations", "8"]),
    "ppo": ("ppo", 6, "benchmarks.ppo_throughput", ["--iterations", "4"]),
}


def last_json(text: str) -> dict | None:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run(cmd: list[str], timeout: int) -> dict:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "cmd": " ".join(cmd)}
    line = last_json(done.stdout)
    if line is None:
        return {"status": "error", "cmd": " ".join(cmd), "stderr": done.stderr[-600:]}
    return line


def seconds(line: dict) -> float | None:
    return line.get("s_per_step", line.get("s_per_iter"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trl-python", required=True)
    ap.add_argument("--trl-ppo-python", help="an environment with TRL 1.12 (PPO)")
    ap.add_argument("--trl-bench", required=True, help="the anchor benchmark's bench_trl.py")
    ap.add_argument(
        "--trainers", nargs="+", default=["grpo", "rloo", "ppo", "dpo", "rm"], choices=sorted(PLAN)
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also rlhfkit with engine.compile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--assets", default=str(ROOT / "runs" / "bench_assets"))
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--results", type=Path, help="append every JSON line here too")
    args = ap.parse_args()
    if not (Path(args.assets) / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "benchmarks.assets", "--out", args.assets], check=True
        )

    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(1, args.rounds + 1):
        for trainer in args.trainers:
            trl_cmd, trl_steps, module, extra = PLAN[trainer]
            python = args.trl_ppo_python if trainer == "ppo" else args.trl_python
            sides = {
                "trl": [
                    python,
                    args.trl_bench,
                    trl_cmd,
                    "--steps",
                    str(trl_steps),
                    "--warmup",
                    "2",
                    "--threads",
                    str(args.threads),
                    "--assets",
                    args.assets,
                ]
            }
            ours = [
                sys.executable,
                "-m",
                module,
                *extra,
                "--precision",
                "fp32",
                "--threads",
                str(args.threads),
                "--assets",
                args.assets,
            ]
            sides["rlhfkit"] = ours
            if args.compile:
                sides["rlhfkit_compile"] = [*ours, "--compile"]
            for side, cmd in sides.items():
                line = run(cmd, args.timeout)
                line.update(
                    {
                        "vs_trl_round": r,
                        "vs_trl_side": side,
                        "vs_trl_trainer": trainer,
                        "load_avg_after": load_avg(),
                    }
                )
                runs.setdefault((trainer, side), []).append(line)
                emit(line, args.results)

    table = []
    for trainer in args.trainers:
        med = {}
        for side in ("trl", "rlhfkit", "rlhfkit_compile"):
            times = [seconds(x) for x in runs.get((trainer, side), []) if seconds(x)]
            med[side] = round(statistics.median(times), 3) if times else None
        compiled = runs.get((trainer, "rlhfkit_compile"), [])
        row = {
            "trainer": trainer,
            "trl_s": med["trl"],
            "rlhfkit_s": med["rlhfkit"],
            "ratio": round(med["trl"] / med["rlhfkit"], 2)
            if med["trl"] and med["rlhfkit"]
            else None,
            "rlhfkit_compile_s": med["rlhfkit_compile"],
            "ratio_compile": round(med["trl"] / med["rlhfkit_compile"], 2)
            if med["trl"] and med["rlhfkit_compile"]
            else None,
            "compile_s": [x.get("compile_s") for x in compiled],
            "rss_mib": {
                s: [x.get("peak_rss_mib") for x in runs.get((trainer, s), [])]
                for s in ("trl", "rlhfkit")
            },
        }
        table.append(row)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
