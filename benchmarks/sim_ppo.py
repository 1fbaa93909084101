#!/usr/bin/env python
"""PPO on the simulated world: does it raise the *gold* score on held-out prompts?

Pipeline (each stage with its shipped preset, paths redirected under --out):
  world  `rlhfkit.sim.make_world`              OUT/sim
  SFT    `rlhfkit sft --preset sft_sim`         OUT/runs/sft   (tiny GPT-2 from the sim tokenizer)
  RM     `rlhfkit rm --preset rm_sim`           OUT/runs/rm    (from the SFT model, noisy labels)
  PPO    `rlhfkit ppo --preset ppo_sim`         OUT/runs/ppo   (the gold scorer as a judge)
The SFT and RM stages are skipped when their outputs already exist (--fresh re-runs them).

Prints one JSON line: held-out gold and RM scores before PPO (the SFT policy, evaluation at
iteration 0) and after (the final evaluation), KL to the SFT reference (nats per response),
response length, and the seconds each stage took. The evaluation samples the same held-out
prompts with the same seed before and after, so the difference is the policy's.

Usage: python -m benchmarks.sim_ppo [--out /tmp/sim_ppo] [--seed 0] [--fresh] [key=value ...]
(trailing key=value pairs override the PPO config, e.g. iterations=20 kl_coef=0).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="/tmp/sim_ppo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="re-run the world, SFT and RM stages")
    ap.add_argument("overrides", nargs="*", help="PPO config overrides, key=value")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from rlhfkit.algos import ppo, rm, sft
    from rlhfkit.config import load_config
    from rlhfkit.data import format_prompt, read_prompts
    from rlhfkit.engine.metrics import read_metrics
    from rlhfkit.eval.judges import gold_judge
    from rlhfkit.sim import make_world

    out = Path(args.out)
    sim, runs = out / "sim", out / "runs"
    seconds: dict[str, float] = {}
    engine = [f"engine.seed={args.seed}"]

    t = time.perf_counter()
    if args.fresh or not (sim / "prompts" / "eval.jsonl").is_file():
        make_world(sim, seed=args.seed)
    seconds["world"] = time.perf_counter() - t

    t = time.perf_counter()
    sft_model = runs / "sft" / "model"
    if args.fresh or not (sft_model / "config.json").is_file():
        sft.train(
            load_config(
                sft.SFTConfig,
                preset="sft_sim",
                overrides=[
                    f"out_dir={runs / 'sft'}",
                    f"tokenizer={sim / 'tokenizer'}",
                    f"data.train={sim / 'sft' / 'train.jsonl'}",
                    f"data.validation={sim / 'sft' / 'validation.jsonl'}",
                    "engine.resume=false",
                    *engine,
                ],
            )
        )
    seconds["sft"] = time.perf_counter() - t

    t = time.perf_counter()
    rm_model = runs / "rm" / "model"
    if args.fresh or not (rm_model / "config.json").is_file():
        rm.train(
            load_config(
                rm.RMConfig,
                preset="rm_sim",
                overrides=[
                    f"out_dir={runs / 'rm'}",
                    f"model.name_or_path={sft_model}",
                    f"data.train={sim / 'preferences' / 'train.jsonl'}",
                    f"data.validation={sim / 'preferences' / 'test.jsonl'}",
                    "engine.resume=false",
                    *engine,
                ],
            )
        )
    seconds["rm"] = time.perf_counter() - t

    # the gold judge gets the prompt text the policy saw; map it back to the world's dialogue
    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    dialogues = {
        format_prompt(tokenizer, r.prompt): r.prompt
        for r in read_prompts(sim / "prompts" / "eval.jsonl").records
    }

    def gold(prompts: list[str], responses: list[str]) -> list[float]:
        return gold_judge([dialogues[p] for p in prompts], [r.strip() for r in responses])

    t = time.perf_counter()
    cfg = load_config(
        ppo.PPOConfig,
        preset="ppo_sim",
        overrides=[
            f"out_dir={runs / 'ppo'}",
            f"policy.name_or_path={sft_model}",
            f"reward_model={rm_model}",
            f"data.train={sim / 'prompts' / 'train.jsonl'}",
            f"eval_prompts={sim / 'prompts' / 'eval.jsonl'}",
            "engine.resume=false",
            *engine,
            *args.overrides,
        ],
    )
    result = ppo.train(cfg, judges={"gold": gold})
    seconds["ppo"] = time.perf_counter() - t

    evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "eval/gold" in r]
    before, after = evals[0], evals[-1]
    train_rows = [
        r for r in read_metrics(result.run_dir / "metrics.jsonl") if "reward/score_mean" in r
    ]
    print(
        json.dumps(
            {
                "bench": "sim_ppo",
                "status": result.status,
                "iterations": result.iterations_done,
                "eval_prompts": cfg.eval_size,
                "gold_before": round(before["eval/gold"], 4),
                "gold_after": round(after["eval/gold"], 4),
                "rm_before": round(before["eval/rm_score"], 4),
                "rm_after": round(after["eval/rm_score"], 4),
                "kl_to_ref_after": round(after["eval/kl_to_ref"], 4),
                "length_before": round(before["eval/length_mean"], 2),
                "length_after": round(after["eval/length_mean"], 2),
                "eval_curve": [
                    {
                        "step": r["step"],
                        "gold": round(r["eval/gold"], 4),
                        "rm": round(r["eval/rm_score"], 4),
                        "kl": round(r["eval/kl_to_ref"], 4),
                    }
                    for r in evals
                ],
                "train_reward_first_last": [
                    round(train_rows[0]["reward/score_mean"], 4),
                    round(train_rows[-1]["reward/score_mean"], 4),
                ],
                "pattern_collapse_warnings": len(result.warnings),
                "seconds": {k: round(v, 1) for k, v in seconds.items()},
                "overrides": args.overrides,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
