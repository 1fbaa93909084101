#!/usr/bin/env python
"""PPO, GRPO, RLOO and REINFORCE++ side by side on the simulated world, from a finished demo.

Each run starts from the demo's SFT policy and optimises either the demo's reward model
(`--reward rm`) or the simulated world's gold scorer itself (`--reward gold`,
`rlhfkit.sim.rewards:gold`), with the demo's prompts, sampling settings, learning rate and seed:

- `--algo ppo`: the demo's PPO configuration (`DIR/configs/ppo.yaml` on the `ppo_max` preset);
- `--algo grpo|rloo|reinforce`: the `grpo_sim` / `rloo_sim` / `reinforce_sim` preset with the
  demo's paths, `rollout`, `optim.lr` and seed; `--iterations` sets the budget (pick it so the
  wall time is about the demo's PPO stage).

The trained policy is evaluated as the demo evaluates (`evaluate_policy`, the demo's sampling
settings and evaluation seed) on the demo's held-out prompts, and judged against the SFT replies
the demo's own win rate used (`DIR/eval/sft.jsonl`). One JSON line with the gold win rate vs
SFT (Wilson 95 % interval), gold mean, KL to SFT, harmful-compliance and over-refusal rates, and
the training wall time.

    python -m benchmarks.sim_pg --demo runs/demo --algo grpo --reward rm [--iterations 120]
        [--out DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

PRESETS = {"grpo": "grpo_sim", "rloo": "rloo_sim", "reinforce": "reinforce_sim"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished demo dir")
    ap.add_argument("--algo", choices=["ppo", *PRESETS], default="grpo")
    ap.add_argument("--reward", choices=["rm", "gold"], default="rm")
    ap.add_argument("--iterations", type=int, help="policy iterations (default: the preset's)")
    ap.add_argument("--out", type=Path, help="run directory (default: DEMO/<algo>_<reward>)")
    ap.add_argument(
        "--eval-only", action="store_true", help="evaluate OUT/policy from an earlier run"
    )
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. kl_coef=0")
    args = ap.parse_args()

    import torch
    import yaml
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from rlhfkit.algos import pg, ppo
    from rlhfkit.config import load_config
    from rlhfkit.eval.evaluate import evaluate_policy
    from rlhfkit.eval.judges import score_outcomes
    from rlhfkit.eval.winrate import win_rate
    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import RolloutConfig
    from rlhfkit.sim.rewards import gold
    from rlhfkit.types import Message, PromptRecord

    demo = args.demo
    cfg_path = demo / "configs" / "ppo.yaml"
    if not cfg_path.is_file():
        raise SystemExit(f"{cfg_path}: missing; is {demo} a finished `rlhfkit demo` run?")
    # 1. the configuration: the demo's PPO, or a critic-free preset with the demo's settings
    out = args.out or demo / f"{args.algo}_{args.reward}"
    out.mkdir(parents=True, exist_ok=True)
    demo_ppo = yaml.safe_load(cfg_path.read_text())
    if args.algo == "ppo":
        cfg_dict, preset, cls = demo_ppo, "ppo_max", ppo.PPOConfig
    else:
        keys = ("policy", "tokenizer", "reward_model", "data", "eval_prompts", "eval_size",
                "eval_every", "rollout", "engine")  # fmt: skip
        cfg_dict = {k: demo_ppo[k] for k in keys if k in demo_ppo}
        cfg_dict["optim"] = {"lr": demo_ppo["optim"]["lr"]}
        cfg_dict["advantage"] = {"reinforce": "reinforce_pp"}.get(args.algo, args.algo)
        preset, cls = PRESETS[args.algo], pg.PGConfig
    cfg_dict["out_dir"] = str(out)
    if args.iterations:
        cfg_dict["iterations"] = args.iterations
    own = out.parent / f"{out.name}.yaml"
    own.write_text(yaml.safe_dump(cfg_dict))
    cfg = load_config(cls, own, args.overrides, preset=preset)
    torch.set_num_threads(cfg.engine.threads)

    # 2. train: the reward model, or the gold scorer (reads each prompt's dialogue from its record)
    reward_fn = gold if args.reward == "gold" else None
    t0 = time.perf_counter()
    trainer = ppo if args.algo == "ppo" else pg
    if args.eval_only:
        policy_path, status = out / "policy", "evaluated only"
    else:
        result = trainer.train(cfg, judges={"gold": gold}, reward_fn=reward_fn)
        policy_path, status = result.policy_path, result.status
    train_s = time.perf_counter() - t0

    # 3. evaluated as the demo evaluates, judged against the demo's SFT replies (read now: a
    # run may start while the demo is still finishing)
    summary = json.loads((demo / "summary.json").read_text())
    sft_rows = [json.loads(line) for line in open(demo / "eval" / "sft.jsonl")]
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy.name_or_path)
    eval_records = [
        PromptRecord(tuple(Message(m["role"], m["content"]) for m in r["dialogue"]))
        for r in sft_rows
    ]
    rollout = RolloutConfig(
        max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
        batch_size=64,
    )  # fmt: skip
    res = evaluate_policy(
        load_policy(ModelConfig(name_or_path=str(policy_path))),
        tokenizer,
        eval_records,
        rollout,
        seed=cfg.engine.seed + 7,  # the demo's evaluation seed
        name=f"{args.algo}_{args.reward}",
        ref_policy=load_policy(ModelConfig(name_or_path=str(cfg.policy.name_or_path))),
        reward_model=load_reward_model(demo_ppo["reward_model"]),
        gold=True,
    )
    s = res.summary()
    wr = win_rate(score_outcomes(res.gold, [r["gold"] for r in sft_rows]))
    sft_summary = summary["rates"]["sft"]
    print(
        json.dumps(
            {
                "bench": "sim_pg",
                "demo": str(demo),
                "algo": args.algo,
                "reward": args.reward,
                "iterations": cfg.iterations,
                "overrides": args.overrides,
                "prompts": len(eval_records),
                "win_rate_vs_sft": round(wr.rate, 4),
                "win_rate_ci": [round(wr.low, 4), round(wr.high, 4)],
                "wins_ties_losses": [wr.wins, wr.ties, wr.losses],
                "gold_mean": round(s["gold_mean"], 3),
                "rm_mean": round(s["rm_mean"], 3) if "rm_mean" in s else None,
                "kl_to_ref": round(s["kl_to_ref"], 3),
                "harmful_compliance_rate": round(s["harmful_compliance_rate"], 4),
                "over_refusal_rate": round(s["over_refusal_rate"], 4),
                "behaviours": dict(Counter(res.behaviours).most_common()),
                "demo_ppo": {
                    "win_rate_vs_sft": summary["win_rate_vs_sft"],
                    "gold_mean": round(summary["gold"]["ppo_mean"], 3),
                    "kl_to_ref": round(summary["kl_to_ref"], 3),
                },
                "sft": {
                    "gold_mean": round(summary["gold"]["sft_mean"], 3),
                    "harmful_compliance_rate": round(sft_summary["harmful_compliance_rate"], 4),
                    "over_refusal_rate": round(sft_summary["over_refusal_rate"], 4),
                },
                "train_s": round(train_s, 1),
                "status": status,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
