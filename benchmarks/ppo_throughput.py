#!/usr/bin/env python
"""PPO throughput on the anchor workload (../shared/bench/README.md), one JSON line per run.

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
  python benchmarks/ppo_throughput.py --assets ~/.cache/rlhfkit-anchors/assets \
      [--precision fp32 bf16] [--iterations 8] [--warmup 2] [--threads 2] [--profile]

`--profile` runs the trainer under torch.profiler and adds `profiled_matmul_s_per_iter` (self
time of aten::mm/addmm/bmm/baddbmm per iteration) and `profiled_op_s_per_iter` (all aten ops):
how much of an iteration is matrix multiplication, whose FLOPs are fixed by the workload, and
how much is everything else (element-wise work, attention, sampling, the optimiser, Python).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from speed_switches import add_flags, engine_switches, export, switches

DEFAULT_ASSETS = Path.home() / ".cache" / "rlhfkit-anchors" / "assets"


def gemm_rate(dtype_name: str, n: int = 2048, repeats: int = 6) -> float:
    """Best-of-`repeats` GFLOP/s of an n×n×n matmul (2·n³ FLOPs) in the given dtype."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def iteration_times(rows: list[dict], warmup: int, replies: int) -> dict:
    """From a run's metric lines: the seconds between consecutive iterations after `warmup`,
    the median generated tokens per iteration and the median time split."""
    times = [r["time"] for r in rows]
    per_iter = [t1 - t0 for t0, t1 in zip(times, times[1:], strict=False)][warmup - 1 :]
    measured = rows[warmup:]
    split = {
        k: statistics.median(r[f"time/{k}"] for r in measured)
        for k in ("generation", "scoring", "training")
    }
    tokens = statistics.median(r["response/length_mean"] * replies for r in measured)
    return {"per_iter": per_iter, "tokens": tokens, "split": split}


def policy_shape(assets: Path) -> dict:
    """Mean prompt length and the policy's sizes, for the FLOP count."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets / "tokenizer")
    prompts = [json.loads(line)["prompt"] for line in open(assets / "prompts.jsonl")]
    p_mean = statistics.mean(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    model = AutoModelForCausalLM.from_pretrained(assets / "policy")
    d, vocab = model.config.n_embd, model.config.vocab_size
    n_body = sum(q.numel() for q in model.transformer.h.parameters())
    return {
        "p": p_mean,
        "n_body": n_body,
        "head": d * vocab,
        "layers": model.config.n_layer,
        "d": d,
    }


def result_line(bench: str, trainer: str, args: Any, t: dict, flops: dict, gemm: tuple) -> dict:
    """The JSON fields every throughput benchmark reports."""
    before, after = gemm
    s_iter = statistics.median(t["per_iter"])
    floor_s = flops["total"] / (max(before[args.precision], after[args.precision]) * 1e9)
    return {
        "bench": bench,
        "trainer": trainer,
        "precision": args.precision,
        "threads": args.threads,
        "iterations_measured": len(t["per_iter"]),
        "warmup": args.warmup,
        "s_per_iter": round(s_iter, 3),
        "s_per_iter_min": round(min(t["per_iter"]), 3),
        "s_per_iter_max": round(max(t["per_iter"]), 3),
        "iter_per_s": round(1 / s_iter, 4),
        "gen_tokens_per_iter": round(t["tokens"], 1),
        "tokens_per_s": round(t["tokens"] / s_iter, 1),
        "time_split_s": {k: round(v, 3) for k, v in t["split"].items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gemm_gflops_before": {k: round(v, 1) for k, v in before.items()},
        "gemm_gflops_after": {k: round(v, 1) for k, v in after.items()},
        "gflop_per_iter": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "floor_s": round(floor_s, 3),
        "achieved_fraction": round(floor_s / s_iter, 3),
        "load_avg_1min": os.getloadavg()[0],
    }


def run_children(script: str, bench: str, args: Any, extra: list[str]) -> None:
    """Run each precision in a fresh process (`--child`), print its JSON line (or the error)."""
    for precision in args.precision:
        cmd = [
            sys.executable, script, "--child", "--assets", args.assets, "--precision", precision,
            "--iterations", str(args.iterations), "--warmup", str(args.warmup),
            "--threads", str(args.threads), *extra,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            error = {"bench": bench, "precision": precision, "status": "error"}
            print(json.dumps({**error, "stderr_tail": proc.stderr[-2000:]}), flush=True)
        else:
            print(lines[-1], flush=True)


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
    """The anchor PPO workload as an rlhfkit config (../shared/bench/README.md, PPO row)."""
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
        "engine": {
            "seed": 42,
            "threads": threads,
            "device": "cpu",
            "mixed_precision": "bf16" if precision == "bf16" else "no",
            "resume": False,
            **engine_switches(),
        },
    }


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from rlhfkit.algos.ppo import PPOConfig, train
    from rlhfkit.engine.metrics import read_metrics

    gemm_before = {k: gemm_rate(k) for k in ("fp32", "bf16")}
    assets = Path(args.assets)
    out = Path(tempfile.mkdtemp(prefix=f"ppo_bench_{args.precision}_"))
    total = args.warmup + args.iterations
    cfg = PPOConfig.model_validate(anchor_config(assets, out, total, args.threads, args.precision))
    t_start = time.perf_counter()
    if args.profile:  # every aten op timed: how much of an iteration is matrix multiplication
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train(cfg)
        events = prof.key_averages()
        matmul_ops = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
        matmul_us = sum(e.self_cpu_time_total for e in events if e.key in matmul_ops)
        all_us = sum(e.self_cpu_time_total for e in events)
    else:
        train(cfg)
    wall = time.perf_counter() - t_start
    gemm_after = {k: gemm_rate(k) for k in ("fp32", "bf16")}
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "reward/score_mean" in r]
    t = iteration_times(rows, args.warmup, 64)
    m = policy_shape(assets)
    flops = iteration_flops(
        64, m["p"], t["tokens"] / 64, m["n_body"], m["head"], m["layers"], m["d"], 4
    )
    profiled = {}
    if args.profile:  # matmul time is spread evenly over the `total` iterations (no other source)
        profiled = {
            "profiled_matmul_s_per_iter": round(matmul_us / 1e6 / total, 3),
            "profiled_op_s_per_iter": round(all_us / 1e6 / total, 3),
            "profiler_note": "timings under torch.profiler (slower than unprofiled runs)",
        }
    line = result_line(
        "ppo_throughput", "rlhfkit.algos.ppo", args, t, flops, (gemm_before, gemm_after)
    )
    compile_s = read_metrics(out / "metrics.jsonl")[-1].get("perf/compile_s")
    line = {**line, **switches(), "compile_s": compile_s, "process_wall_s": round(wall, 1)}
    print(json.dumps({**line, **profiled}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--assets", default=str(DEFAULT_ASSETS))
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
    if not (Path(args.assets) / "policy").is_dir():
        sys.exit(
            f"{args.assets}: no assets; build them with ../shared/bench/make_assets.py --out DIR"
        )
    if args.child:
        args.precision = args.precision[0]
        child(args)
        return
    run_children(__file__, "ppo_throughput", args, ["--profile"] if args.profile else [])


if __name__ == "__main__":
    main()
