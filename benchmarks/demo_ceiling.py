#!/usr/bin/env python
"""How high can the demo's win rate go? The gold-oracle best-of-n ceiling of a finished demo run.

The demo's goal is a win rate ≥ 70 % for PPO against SFT under the gold judge (ties half). This
script asks what *any* policy that stays as close to SFT as PPO did could reach, by measuring
the best policy of a well-understood family: best-of-n selection from the SFT policy **with
the gold scorer itself as the selector** (an oracle no trained reward model can beat).

For each held-out evaluation prompt of the run (the same prompts and the same SFT replies the
demo's win rate used, `DIR/eval/sft.jsonl`), it samples n replies from the SFT policy (the
demo's sampling settings, a seed of its own) and keeps the one the gold scorer ranks highest.
Its outcome against the SFT reply (1 win, ½ tie, 0 loss) gives the ceiling for that n.

KL: the best-of-n policy's KL to the policy it samples from is at most log n − (n − 1)/n nats
(Stiennon et al. 2020, appendix; exact for continuous rewards, an upper bound with ties), and
best-of-n is close to the best reward reachable at that KL on the same prompts (Gao et al.
2022; Beirami et al. 2024). So the row whose bound matches the PPO policy's KL (`kl_to_ref` in
summary.json) is an upper reference for the demo's PPO at its KL leash; an optimistic one,
since the oracle knows for each test prompt which sample is right and a policy has to learn it
(`demo_gold_reward.py` trains PPO against the gold scorer to measure what a policy reaches).

Next to it, the same best-of-n with the demo's reward model as the selector (a policy rlhfkit
can actually run: `rm_selected_*`): the gap between the two rows is what the reward model's
errors cost *to selection*; PPO against the same RM can do better (it learns the behaviours the
RM and the gold scorer agree on). Also printed: the prompts on which all n oracle candidates score the same as the SFT reply
(ties no selection can break) and the breakdown of the PPO run's actual outcomes.

    python -m benchmarks.demo_ceiling --demo runs/demo [--n 1 2 4 7 16] [--seed 123]

One JSON line per n, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished demo dir")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 7, 16])
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--rm", type=Path, help="selector reward model (default: DEMO/rm/model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=1.0, help="the demo's eval setting")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="the demo's eval setting")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from rlhfkit.eval.ceiling import ceiling_rows, sample_candidates
    from rlhfkit.eval.judges import gold_judge, score_outcomes
    from rlhfkit.eval.winrate import win_rate
    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import RolloutConfig
    from rlhfkit.types import Message, PromptRecord

    demo = args.demo
    summary = json.loads((demo / "summary.json").read_text())
    sft_rows = [json.loads(line) for line in open(demo / "eval" / "sft.jsonl")]
    ppo_rows = [json.loads(line) for line in open(demo / "eval" / "ppo.jsonl")]
    # whole dialogues: a multi-turn prompt is only judged (and answered) as a dialogue
    records = [
        PromptRecord(tuple(Message(m["role"], m["content"]) for m in r["dialogue"]))
        for r in sft_rows
    ]
    sft_gold = [r["gold"] for r in sft_rows]
    sft_dir = demo / "sft" / "model"
    if not sft_dir.is_dir():
        raise SystemExit(f"{sft_dir}: no SFT model; is {demo} a finished `rlhfkit demo` run?")
    rm_dir = args.rm or demo / "rm" / "model"
    cfg = RolloutConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=64
    )
    t0 = time.perf_counter()
    gold, rm = sample_candidates(
        load_policy(ModelConfig(name_or_path=str(sft_dir))), load_tokenizer(sft_dir), records,
        cfg, max(args.n), args.seed, gold_judge, load_reward_model(rm_dir),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    for row in ceiling_rows(gold, sft_gold, args.n, rm):
        print(json.dumps({"bench": "demo_ceiling", **row.as_dict()}), flush=True)
    ppo = win_rate(score_outcomes([p["gold"] for p in ppo_rows], sft_gold))
    print(
        json.dumps(
            {
                "bench": "demo_ceiling",
                "demo": str(demo),
                "reward_model": str(rm_dir),
                "prompts": len(records),
                "ppo_win_rate": round(ppo.rate, 4),
                "ppo_wins_ties_losses": [ppo.wins, ppo.ties, ppo.losses],
                "ppo_kl_to_ref": summary.get("kl_to_ref"),
                "sft_gold_mean": round(sum(sft_gold) / len(sft_gold), 3),
                "samples": len(records) * max(args.n),
                "sampling_and_scoring_s": round(seconds, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
