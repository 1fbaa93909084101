"""PPO with LoRA on SmolLM2-135M-Instruct against the SmolLM2 LoRA reward model (critic
initialised from it), HH dialogues of the fixed split as prompts: reward and KL per iteration,
and the held-out win rate against the starting model under the RM it optimised and under a
second judge it never saw (the fully fine-tuned SmolLM2 RM), both asked in both orders. Where
the two judges disagree, the policy found what the optimised RM likes and the other does not.

    python -m benchmarks.real.rm_smollm2 --lora && python -m benchmarks.real.rm_smollm2
    python -m benchmarks.real.ppo_smollm2 [--prompts 32] [key=value ...]

One JSON line is appended to runs/real/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.common import emit, load_avg, peak_rss_mib
from benchmarks.real.realdata import held_out_prompts, hh_split, model_dir, win_rates

JUDGES = {"rm_lora": Path("runs/rm_smollm2_lora/model"), "rm_full": Path("runs/rm_smollm2/model")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-pairs", type=int, default=64)
    ap.add_argument("--held-out-pairs", type=int, default=96)
    ap.add_argument("--prompts", type=int, default=32, help="held-out prompts for win rates")
    ap.add_argument("--out", type=Path, default=Path("runs/ppo_smollm2"))
    ap.add_argument("overrides", nargs="*", help="PPOConfig key=value overrides")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos.ppo import PPOConfig, train
    from rlhfkit.config import load_config

    if not (JUDGES["rm_lora"] / "config.json").is_file():
        raise SystemExit(f"{JUDGES['rm_lora']}: run benchmarks/real/rm_smollm2.py --lora first")
    train_file, held_file, _ = hh_split(
        Path("runs/real_split"), args.train_pairs, args.held_out_pairs
    )
    base = model_dir()
    cfg = load_config(
        PPOConfig,
        preset="ppo_smollm2",
        overrides=[
            f"out_dir={args.out}",
            f"policy.name_or_path={base}",
            f"data.train={train_file}",
            f"eval_prompts={held_file}",
            *args.overrides,
        ],
    )
    t = time.perf_counter()
    result = train(cfg)
    train_wall = time.perf_counter() - t
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [
        {
            "it": x.get("step"),
            "score": round(x["reward/score_mean"], 3),
            "kl": round(x.get("policy/kl_to_ref", float("nan")), 4),
            "len": round(x.get("response/length_mean", 0), 1),
        }
        for x in lines
        if "reward/score_mean" in x
    ]
    evals = [x for x in lines if "eval/rm_score" in x]
    judges = {k: v for k, v in JUDGES.items() if (v / "config.json").is_file()}
    figures = {
        "bench": "ppo_smollm2",
        "iterations": cfg.iterations,
        "critic_warmup_iters": cfg.critic_warmup_iters,
        "replies_per_iteration": cfg.rollout_batch_size,
        "max_new_tokens": cfg.rollout.max_new_tokens,
        "curve": curve,
        "eval_rm_score_before_after": [
            round(evals[0]["eval/rm_score"], 4),
            round(evals[-1]["eval/rm_score"], 4),
        ]
        if evals
        else None,
        "eval_kl_after": round(evals[-1].get("eval/kl_to_ref", float("nan")), 4) if evals else None,
        "train_wall_s": round(train_wall, 1),
        "win_rate_vs_start": win_rates(
            result.policy_path,
            base,
            held_out_prompts(held_file, args.prompts),
            judges,
            cfg.rollout,
            cfg.data.max_prompt_length + cfg.rollout.max_new_tokens,
        ),
        "wall_s": round(time.perf_counter() - t, 1),
        "peak_rss_mib": peak_rss_mib(),
        "load_avg_1m": load_avg(),
        "policy_dir": str(result.policy_path),
    }
    emit(figures, Path("runs/real/results.jsonl"), indent=True)


if __name__ == "__main__":
    main()
