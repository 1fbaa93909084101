#!/usr/bin/env python
"""PPO scaling: the anchor PPO workload on 1 process vs 2 processes (DDP, gloo), one JSON line.

Workload: `ppo_throughput.py`'s (tiny GPT-2 policy / reference / critic / reward model, 64
rollouts of ≤ 32 tokens per iteration, 4 epochs × 4 mini-batches of 16), fp32, one torch thread
per process. The 1-process run is `rlhfkit ppo -c CONFIG`; the 2-process run is
`accelerate launch --multi_gpu --num_processes 2 -m rlhfkit.cli ppo -c CONFIG` (on a CPU host
`--multi_gpu` selects torchrun; the Engine joins the processes over gloo). Both runs see the same
global batch: each of 2 processes samples and scores 32 of the 64 prompts, and takes 8 of the 16
rows of each mini-batch.

Reported: `s_per_iter` of each (median wall time between consecutive iterations' metric lines
after `--warmup`), their time split, `speedup` = s_1 / s_2 and `efficiency` = speedup / 2 (1.0:
perfect scaling). The runs alternate (1, 2, 1, 2, … for `--rounds`), and the load average is
recorded: on a shared 2-core host the 2-process run competes with everything else for the second
core, so the efficiency measured here is a lower bound of what 2 idle cores give.

Usage:
  python -m benchmarks.ppo_scaling [--assets DIR] \
      [--iterations 6] [--warmup 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.assets import DEFAULT_DIR, anchor_assets
from benchmarks.common import command, iteration_times, load_avg
from benchmarks.ppo_throughput import anchor_config


def config(assets: Path, out: Path, total: int) -> dict:
    """The anchor PPO workload at one thread per process, fp32."""
    return anchor_config(assets, out, total, threads=1, precision="fp32")


def run(processes: int, assets: Path, total: int, warmup: int) -> dict:
    from rlhfkit.engine.metrics import read_metrics

    out = Path(tempfile.mkdtemp(prefix=f"ppo_scaling_{processes}_"))
    cfg_path = out.with_suffix(".yaml")
    cfg_path.write_text(yaml.safe_dump(config(assets, out / "run", total)))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    if processes == 1:
        cmd = [sys.executable, "-m", "rlhfkit.cli", "ppo", "-c", str(cfg_path)]
    else:
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "-m", "rlhfkit.cli", "ppo", "-c", str(cfg_path),
        ]  # fmt: skip
    load_before = load_avg()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rows = [r for r in read_metrics(out / "run" / "metrics.jsonl") if "reward/score_mean" in r]
    t = iteration_times(rows, warmup, 64)
    return {
        "s_per_iter": statistics.median(t["per_iter"]),
        "split": t["split"],
        "tokens": t["tokens"],
        "load_avg_1min": [load_before, load_avg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--assets", type=Path, default=DEFAULT_DIR, help="built by benchmarks.assets when absent"
    )
    ap.add_argument("--iterations", type=int, default=6, help="measured iterations")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating 1- and 2-process runs")
    args = ap.parse_args()
    assets, total = anchor_assets(args.assets), args.warmup + args.iterations
    results: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for n in (1, 2):
            results[n].append(run(n, assets, total, args.warmup))
            print(f"# {n} process(es): {results[n][-1]}", file=sys.stderr, flush=True)
    s1 = statistics.median(r["s_per_iter"] for r in results[1])
    s2 = statistics.median(r["s_per_iter"] for r in results[2])

    def split(n: int) -> dict:
        return {
            k: round(statistics.median(r["split"][k] for r in results[n]), 3)
            for k in ("generation", "scoring", "training")
        }

    line = {
        "bench": "ppo_scaling",
        "precision": "fp32",
        "threads_per_process": 1,
        "rounds": args.rounds,
        "iterations_measured": args.iterations,
        "s_per_iter_1proc": round(s1, 3),
        "s_per_iter_2proc": round(s2, 3),
        "s_per_iter_each_run": {n: [round(r["s_per_iter"], 3) for r in results[n]] for n in (1, 2)},
        "time_split_s_1proc": split(1),
        "time_split_s_2proc": split(2),
        "speedup": round(s1 / s2, 3),
        "efficiency": round(s1 / s2 / 2, 3),
        "load_avg_1min": {n: [r["load_avg_1min"] for r in results[n]] for n in (1, 2)},
        "cpu_count": os.cpu_count(),
        "command": command(),
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
