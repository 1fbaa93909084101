#!/usr/bin/env python
"""PPO throughput on the anchor workload (`benchmarks/README.md`), one JSON line per run.

Workload (the same as TRL's PPO row of the anchor baseline): tiny GPT-2 policy/reference
(4 layers, d=256, vocab 4096) and GPT2ForSequenceClassification reward model and critic (the
critic starts from the reward model), 64 prompts per iteration (raw text, 24-32 tokens),
≤ 32 new tokens at temperature 0.7 stopping at EOS, GAE γ = 1, λ = 0.95, whitened advantages,
4 epochs × 4 mini-batches of 16 (16 policy + 16 critic optimiser steps), fp32 or bf16 autocast,
2 torch threads. It runs `rlhfkit.algos.ppo.train` itself, so what is timed is the trainer users
run (rollout, scoring, update, logging), not a stripped-down copy.

Each precision runs in a fresh process. Reported: `s_per_iter` (median wall time between
consecutive iterations' metric lines, after `--warmup` iterations), its min/max, tokens/s
(generated tokens up to and including EOS / s_per_iter), the median time split (generation,
scoring, training), peak RSS, the GEMM rate measured in the same process before and after, and
the FLOP-bound floor: `floor_s` = FLOPs of one iteration / the machine's large-matmul rate,
`achieved_fraction` = floor_s / s_per_iter.

FLOPs counted per iteration (B rollouts, mean prompt P and response R tokens, T = P + R,
N = non-embedding parameters of one model, H = d·V the LM head, L layers, d width):
  forward of one token through a body: 2·N; LM head: 2·H (policy/reference, response tokens
  only: that is all rlhfkit computes, and all that is needed); causal attention per sequence and
  layer: 2·d·T² (QKᵀ and AV over the causal half); backward = 2 × forward.
  generation: B·P prefill body tokens + B·R decoded tokens with the head, attention ≈ causal;
  scoring: reference (body + head on R), critic and reward model (body) forwards over B·T;
  training: epochs × (policy and critic forward + backward over B·T).

Usage:
  python -m benchmarks.ppo_throughput [--assets DIR] \
      [--precision fp32 bf16] [--iterations 8] [--warmup 2] [--threads 2] [--profile]

`--profile` runs the trainer under torch.profiler and adds `profiled_matmul_s_per_iter` (self
time of aten::mm/addmm/bmm/baddbmm per iteration) and `profiled_op_s_per_iter` (all aten ops):
how much of an iteration is matrix multiplication, whose FLOPs are fixed by the workload, and
how much is everything else (element-wise work, attention, sampling, the optimiser, Python).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.assets import DEFAULT_DIR, anchor_assets
from benchmarks.common import (
    engine_settings,
    iteration_times,
    policy_shape,
    result_line,
    run_children,
    timed_online_run,
)
from benchmarks.speed_switches import add_flags, export, switches


def iteration_flops(
    b: int, p: float, r: float, n_body: int, head: int, layers: int, d: int, epochs: int
) -> dict[str, float]:
    """FLOPs of one PPO iteration by phase (see the module docstring)."""
    t = p + r
    attn_fwd = 2 * d * t * t * layers  # one sequence, causal half, QKᵀ + AV
    policy_fwd = b * (t * 2 * n_body + r * 2 * head) + b * attn_fwd
    body_fwd = b * t * 2 * n_body + b * attn_fwd  # critic / reward model (scalar head ~ 0)
    generation = b * (p * 2 * n_body + 2 * head) + b * r * (2 * n_body + 2 * head) + b * attn_fwd
    scoring = policy_fwd + 2 * body_fwd  # reference, critic, reward model
    training = epochs * 3 * (policy_fwd + body_fwd)
    return {
        "generation": generation,
        "scoring": scoring,
        "training": training,
        "total": generation + scoring + training,
    }


def anchor_config(assets: Path, out: Path, total: int, threads: int, precision: str) -> dict:
    """The anchor PPO workload as an rlhfkit config (`benchmarks/README.md`, PPO row)."""
    return {
        "out_dir": str(out),
        "policy": {"name_or_path": str(assets / "policy")},
        "tokenizer": str(assets / "tokenizer"),
        "reward_model": str(assets / "reward"),
        "data": {
            "train": str(assets / "prompts.jsonl"),
            "prompt_template": "raw",
            "max_prompt_length": 64,
        },
        "rollout": {"max_new_tokens": 32, "temperature": 0.7, "batch_size": 64},
        "iterations": total,
        "rollout_batch_size": 64,
        "mini_batch_size": 16,
        "ppo_epochs": 4,
        "gamma": 1.0,
        "lam": 0.95,
        "kl_coef": 0.05,
        "optim": {"lr": 3e-6},
        "critic_optim": {"lr": 3e-6},
        "sample_every": 0,
        "engine": engine_settings(threads, precision),
    }


def child(args: argparse.Namespace) -> None:
    from rlhfkit.algos.ppo import PPOConfig, train

    assets = Path(args.assets)
    out = Path(tempfile.mkdtemp(prefix=f"ppo_bench_{args.precision}_"))
    total = args.warmup + args.iterations
    cfg = PPOConfig.model_validate(anchor_config(assets, out, total, args.threads, args.precision))
    profiled: dict[str, Any] = {}

    def run() -> None:
        if not args.profile:
            train(cfg)
            return
        # every aten op timed: how much of an iteration is matrix multiplication (its time is
        # spread evenly over the `total` iterations: nothing else runs matmuls)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train(cfg)
        events = prof.key_averages()
        matmul_ops = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
        matmul_us = sum(e.self_cpu_time_total for e in events if e.key in matmul_ops)
        all_us = sum(e.self_cpu_time_total for e in events)
        profiled["profiled_matmul_s_per_iter"] = round(matmul_us / 1e6 / total, 3)
        profiled["profiled_op_s_per_iter"] = round(all_us / 1e6 / total, 3)
        profiled["profiler_note"] = "timings under torch.profiler (slower than unprofiled runs)"

    rows, wall, gemm = timed_online_run(run, out, args.threads)
    t = iteration_times(rows, args.warmup, 64)
    m = policy_shape(assets)
    flops = iteration_flops(
        64, m["p"], t["tokens"] / 64, m["n_body"], m["head"], m["layers"], m["d"], 4
    )
    line = result_line("ppo_throughput", "rlhfkit.algos.ppo", args, t, flops, gemm)
    print(
        json.dumps({**line, **switches(), "process_wall_s": round(wall, 1), **profiled}), flush=True
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--assets", type=Path, default=DEFAULT_DIR, help="built by benchmarks.assets when absent"
    )
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--iterations", type=int, default=8, help="measured iterations")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--profile",
        action="store_true",
        help="run under torch.profiler and report the matmul seconds per iteration",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_flags(ap)
    args = ap.parse_args()
    export(args)
    anchor_assets(args.assets)
    if args.child:
        args.precision = args.precision[0]
        child(args)
        return
    run_children(
        "benchmarks.ppo_throughput", "ppo_throughput", args, ["--profile"] if args.profile else []
    )


if __name__ == "__main__":
    main()
