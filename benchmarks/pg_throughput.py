#!/usr/bin/env python
"""GRPO / RLOO throughput on the anchor workload (`benchmarks/README.md`), one JSON line per
run; `grpo_throughput.py` and `rloo_throughput.py` are this script with `--algo` fixed.

Workload (TRL's GRPO and RLOO rows of the anchor baseline): the tiny GPT-2 policy (4 layers,
d = 256, vocab 4096) and GPT2ForSequenceClassification reward model, 16 prompts × 4 samples per
step (raw text, 24-32 prompt tokens), ≤ 32 new tokens at temperature 1 stopping at EOS, one
optimiser step on the 64 replies per rollout (TRL: per_device_train_batch_size = 64, one
generation per step). GRPO: β = 0, no reference model is loaded or run. RLOO: β = 0.05 in the
reward, with a reference. fp32 or bf16 autocast, 2 torch threads. It runs
`rlhfkit.algos.pg.train` itself: what is timed is the trainer users run.

Reported (as `ppo_throughput.py`): `s_per_iter` (median wall time between consecutive
iterations' metric lines after `--warmup`), min/max, generated tokens/s, the time split
(generation, scoring, training), peak RSS, the GEMM rate, and the FLOP floor: FLOPs of one
iteration / the machine's large-matmul rate; `achieved_fraction` = floor / s_per_iter.
FLOPs: generation B·P prefill + B·R decoded tokens through the body and head; scoring the
reward model body over B·T (and, RLOO, the reference over B·T with the head on R tokens);
training 3 × (policy forward over B·T, head on R tokens); attention 2·d·T² per layer.

Usage (in turn with TRL's GRPO / RLOO trainers on the same assets):
  python -m benchmarks.grpo_throughput [--assets DIR] \
      [--precision fp32 bf16] [--iterations 8] [--warmup 2] [--threads 2]
  python -m benchmarks.rloo_throughput ...
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

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

ALGOS = {
    "grpo": {"advantage": "grpo", "kl_coef": 0.0, "kl_loss_coef": 0.0},
    "rloo": {"advantage": "rloo", "kl_coef": 0.05},
}


def iteration_flops(
    b: int, p: float, r: float, n_body: int, head: int, layers: int, d: int, with_ref: bool
) -> dict[str, float]:
    t = p + r
    attn = 2 * d * t * t * layers
    policy_fwd = b * (t * 2 * n_body + r * 2 * head) + b * attn
    body_fwd = b * t * 2 * n_body + b * attn
    generation = b * (p * 2 * n_body + 2 * head) + b * r * (2 * n_body + 2 * head) + b * attn
    scoring = body_fwd + (policy_fwd if with_ref else 0.0)
    training = 3 * policy_fwd
    return {
        "generation": generation,
        "scoring": scoring,
        "training": training,
        "total": generation + scoring + training,
    }


def child(args: argparse.Namespace) -> None:
    from rlhfkit.algos.pg import PGConfig, train

    assets = Path(args.assets)
    out = Path(tempfile.mkdtemp(prefix=f"{args.algo}_bench_{args.precision}_"))
    cfg = PGConfig.model_validate(
        {
            "out_dir": str(out),
            "policy": {"name_or_path": str(assets / "policy")},
            "tokenizer": str(assets / "tokenizer"),
            "reward_model": str(assets / "reward"),
            "data": {
                "train": str(assets / "prompts.jsonl"),
                "prompt_template": "raw",
                "max_prompt_length": 64,
            },
            "rollout": {"max_new_tokens": 32, "temperature": 1.0, "batch_size": 64},
            "iterations": args.warmup + args.iterations,
            "rollout_batch_size": 16,
            "group_size": 4,
            "mini_batch_size": 64,
            "ppo_epochs": 1,
            "loss_mode": "token_mean",
            "optim": {"lr": 1e-6},
            "sample_every": 0,
            **ALGOS[args.algo],
            "engine": engine_settings(args.threads, args.precision),
        }
    )
    rows, wall, gemm = timed_online_run(lambda: train(cfg), out, args.threads)
    t = iteration_times(rows, args.warmup, 64)
    m = policy_shape(assets)
    flops = iteration_flops(
        64, m["p"], t["tokens"] / 64, m["n_body"], m["head"], m["layers"], m["d"],
        args.algo == "rloo",
    )  # fmt: skip
    line = result_line(f"{args.algo}_throughput", "rlhfkit.algos.pg", args, t, flops, gemm)
    print(json.dumps({**line, **switches(), "process_wall_s": round(wall, 1)}), flush=True)


def main(algo: str | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--algo", choices=sorted(ALGOS), default=algo or "grpo")
    ap.add_argument(
        "--assets", type=Path, default=DEFAULT_DIR, help="built by benchmarks.assets when absent"
    )
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--iterations", type=int, default=8, help="measured iterations")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_flags(ap)
    args = ap.parse_args()
    export(args)
    anchor_assets(args.assets)
    if args.child:
        args.precision = args.precision[0]
        child(args)
        return
    run_children("benchmarks.pg_throughput", f"{args.algo}_throughput", args, ["--algo", args.algo])


if __name__ == "__main__":
    main()
