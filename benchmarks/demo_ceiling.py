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
best-of-n is close to the best reward any policy reaches at that KL (Gao et al. 2022; Beirami
et al. 2024). So the row whose bound matches the PPO policy's KL (`kl_to_ref` in
summary.json) is a practical ceiling for the demo's PPO at its KL leash.

Next to it, the same best-of-n with the demo's reward model as the selector (a policy rlhfkit
can actually run: `rm_selected_*`): the gap between the two rows is what the reward model's
errors cost, whatever the optimiser. Also printed: the prompts on which all n oracle candidates score the same as the SFT reply
(ties no selection can break) and the breakdown of the PPO run's actual outcomes.

    python benchmarks/demo_ceiling.py --demo runs/demo [--n 1 2 4 7 16] [--seed 123]

One JSON line per n, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import math
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
    from rlhfkit.eval.judges import gold_judge
    from rlhfkit.eval.winrate import win_rate
    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import RewardModelScorer, RolloutConfig, sample_batches
    from rlhfkit.types import Message, PromptRecord

    demo = args.demo
    summary = json.loads((demo / "summary.json").read_text())
    sft_rows = [json.loads(line) for line in open(demo / "eval" / "sft.jsonl")]
    ppo_rows = [json.loads(line) for line in open(demo / "eval" / "ppo.jsonl")]
    # whole dialogues: a multi-turn prompt is only judged (and answered) as a dialogue
    prompts = [tuple(Message(m["role"], m["content"]) for m in r["dialogue"]) for r in sft_rows]
    sft_gold = [r["gold"] for r in sft_rows]

    sft_dir = demo / "sft" / "model"
    if not sft_dir.is_dir():
        raise SystemExit(f"{sft_dir}: no SFT model; is {demo} a finished `rlhfkit demo` run?")
    tokenizer = load_tokenizer(sft_dir)
    policy = load_policy(ModelConfig(name_or_path=str(sft_dir))).eval()
    n_max = max(args.n)
    records = [PromptRecord(p) for p in prompts for _ in range(n_max)]
    cfg = RolloutConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=64
    )
    t0 = time.perf_counter()
    rm_scorer = RewardModelScorer(load_reward_model(args.rm or demo / "rm" / "model"))
    replies: list[str] = []
    rm: list[float] = []
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for _, rollout, texts in sample_batches(policy, tokenizer, records, cfg, gen):
            replies.extend(texts)
            rm.extend(rm_scorer([], texts, rollout).tolist())
    gold = gold_judge([p for p in prompts for _ in range(n_max)], replies)
    seconds = time.perf_counter() - t0
    per_prompt = [gold[i * n_max : (i + 1) * n_max] for i in range(len(prompts))]
    per_prompt_rm = [rm[i * n_max : (i + 1) * n_max] for i in range(len(prompts))]

    def outcome(a: float, b: float) -> float:
        return 1.0 if a - b > 1e-9 else 0.0 if b - a > 1e-9 else 0.5

    for n in sorted(args.n):
        best = [max(g[:n]) for g in per_prompt]
        wr = win_rate([outcome(b, s) for b, s in zip(best, sft_gold, strict=True)])
        unbreakable = sum(
            all(abs(x - s) <= 1e-9 for x in g[:n])
            for g, s in zip(per_prompt, sft_gold, strict=True)
        )
        kl_bound = math.log(n) - (n - 1) / n
        # the same selection with the demo's reward model as the selector (a real best-of-n)
        by_rm = [
            g[max(range(n), key=r.__getitem__)]
            for g, r in zip(per_prompt, per_prompt_rm, strict=True)
        ]
        wr_rm = win_rate([outcome(b, s) for b, s in zip(by_rm, sft_gold, strict=True)])
        print(
            json.dumps(
                {
                    "bench": "demo_ceiling",
                    "n": n,
                    "kl_bound_nats": round(kl_bound, 3),
                    "oracle_win_rate": round(wr.rate, 4),
                    "ci95": [round(wr.low, 4), round(wr.high, 4)],
                    "wins_ties_losses": [wr.wins, wr.ties, wr.losses],
                    "ties_no_candidate_breaks": unbreakable,
                    "oracle_gold_mean": round(sum(best) / len(best), 3),
                    "rm_selected_win_rate": round(wr_rm.rate, 4),
                    "rm_selected_ci95": [round(wr_rm.low, 4), round(wr_rm.high, 4)],
                    "rm_selected_gold_mean": round(sum(by_rm) / len(by_rm), 3),
                }
            ),
            flush=True,
        )
    ppo = win_rate([outcome(p["gold"], s) for p, s in zip(ppo_rows, sft_gold, strict=True)])
    print(
        json.dumps(
            {
                "bench": "demo_ceiling",
                "demo": str(demo),
                "reward_model": str(args.rm or demo / "rm" / "model"),
                "prompts": len(prompts),
                "ppo_win_rate": round(ppo.rate, 4),
                "ppo_wins_ties_losses": [ppo.wins, ppo.ties, ppo.losses],
                "ppo_kl_to_ref": summary.get("kl_to_ref"),
                "sft_gold_mean": round(sum(sft_gold) / len(sft_gold), 3),
                "samples": len(replies),
                "sampling_and_scoring_s": round(seconds, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
