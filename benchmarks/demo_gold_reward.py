#!/usr/bin/env python
"""Is the reward model what limits the demo? PPO with the gold scorer itself as the reward.

The demo's goal is a win rate ≥ 70 % for PPO against SFT under the gold judge (ties half).
`demo_ceiling.py` measures best-of-n selection with a gold oracle: a selector that sees, for
each test prompt, which of n samples is right. A policy cannot do that: it has to produce good
replies to prompts it has never seen. This script measures what the demo's own PPO reaches when
its reward model is replaced by a perfect one, the simulated world's gold scorer: everything
else is the finished demo run's PPO configuration (`DIR/configs/ppo.yaml`: the `ppo_max`
preset, the same SFT policy, critic initialised from the same RM, same seed), with optional
dotted overrides (e.g. `kl_coef=0 ptx_coef=0 optim.lr=2e-4` for the no-leash ablation's
settings).

- gold-reward PPO ≈ the demo's PPO: the learned RM costs little at this budget; what limits
  the win rate is the policy (what it can learn to do on new prompts at that KL);
- gold-reward PPO far above: the reward model is the limit.

The trained policy is evaluated as the demo evaluates (`evaluate_policy`, the demo's sampling
settings and evaluation seed) on the demo's held-out prompts, and judged against the SFT
replies the demo's own win rate used (`DIR/eval/sft.jsonl`). One JSON line.

    python benchmarks/demo_gold_reward.py --demo runs/demo [--out DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished demo dir")
    ap.add_argument("--out", type=Path, help="run directory (default: DEMO/ppo_gold_reward)")
    ap.add_argument("overrides", nargs="*", help="dotted PPO overrides, e.g. kl_coef=0")
    args = ap.parse_args()

    import torch
    import yaml
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from rlhfkit.algos import ppo
    from rlhfkit.config import load_config
    from rlhfkit.data import read_prompts
    from rlhfkit.data.chat import format_prompt
    from rlhfkit.eval.evaluate import evaluate_policy
    from rlhfkit.eval.judges import gold_judge_on_texts, score_outcomes
    from rlhfkit.eval.winrate import win_rate
    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import RolloutConfig
    from rlhfkit.types import Message, PromptRecord

    demo = args.demo
    cfg_path = demo / "configs" / "ppo.yaml"
    if not cfg_path.is_file():
        raise SystemExit(f"{cfg_path}: missing; is {demo} a finished `rlhfkit demo` run?")
    summary = json.loads((demo / "summary.json").read_text())
    sft_rows = [json.loads(line) for line in open(demo / "eval" / "sft.jsonl")]

    # 1. the demo's PPO configuration, written to the new run directory
    out = args.out or demo / "ppo_gold_reward"
    cfg_dict = yaml.safe_load(cfg_path.read_text())
    cfg_dict["out_dir"] = str(out)
    out.mkdir(parents=True, exist_ok=True)
    own = out.parent / f"{out.name}.yaml"
    own.write_text(yaml.safe_dump(cfg_dict))
    cfg = load_config(ppo.PPOConfig, own, args.overrides, preset="ppo_max")
    torch.set_num_threads(cfg.engine.threads)

    # 2. the reward: the gold scorer on every prompt PPO can score (training and held-out)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy.name_or_path)
    records = [
        *read_prompts(cfg.data.train).records,
        *read_prompts(cfg.eval_prompts).records,
    ]
    gold = gold_judge_on_texts({format_prompt(tokenizer, r.prompt): r.prompt for r in records})
    t0 = time.perf_counter()
    result = ppo.train(cfg, judges={"gold": gold}, reward_fn=gold)
    train_s = time.perf_counter() - t0

    # 3. evaluated as the demo evaluates, judged against the demo's SFT replies
    eval_records = [
        PromptRecord(tuple(Message(m["role"], m["content"]) for m in r["dialogue"]))
        for r in sft_rows
    ]
    sft_dir = Path(cfg.policy.name_or_path)
    rollout = RolloutConfig(
        max_new_tokens=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        batch_size=64,
    )
    res = evaluate_policy(
        load_policy(ModelConfig(name_or_path=str(result.policy_path))),
        tokenizer,
        eval_records,
        rollout,
        seed=cfg.engine.seed + 7,  # the demo's evaluation seed
        name="ppo_gold_reward",
        ref_policy=load_policy(ModelConfig(name_or_path=str(sft_dir))),
        reward_model=load_reward_model(cfg.reward_model),
        gold=True,
    )
    s = res.summary()
    wr = win_rate(score_outcomes(res.gold, [r["gold"] for r in sft_rows]))
    sft_summary = summary["rates"]["sft"]
    print(
        json.dumps(
            {
                "bench": "demo_gold_reward",
                "demo": str(demo),
                "overrides": args.overrides,
                "prompts": len(eval_records),
                "win_rate_vs_sft": round(wr.rate, 4),
                "win_rate_ci": [round(wr.low, 4), round(wr.high, 4)],
                "wins_ties_losses": [wr.wins, wr.ties, wr.losses],
                "gold_mean": round(s["gold_mean"], 3),
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
                "ppo_s": round(train_s, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
