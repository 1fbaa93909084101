"""Verifiable rewards on the simulated world, for the online trainers' `reward_fn` / `rewards`.

Both take `(prompts, responses, records)` (see `rlhfkit.rollout.scorers.CallableScorer`) and read
each prompt's dialogue from its record, so they work whatever template formatted the prompt.

- `gold`: the world's gold score of each reply (`sim.gold`): training directly on the "true human
  preference" (an upper bound for what an RM can teach; `benchmarks/demo_gold_reward.py`).
- `arithmetic_exact_match`: 1.0 when the last integer written in digits in the reply is the
  answer of an arithmetic prompt, else 0.0 (0.0 for every other family): the "last number"
  exact match of GSM8K-style verifiable rewards (Cobbe et al. 2021; DeepSeekMath §4 trains GRPO
  on such rule rewards).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rlhfkit.sim.gold import judge_task
from rlhfkit.sim.world import PromptParseError, parse_task
from rlhfkit.types import PromptRecord

__all__ = ["arithmetic_exact_match", "gold"]

_INTEGER = re.compile(r"-?\d+")


def gold(
    prompts: Sequence[str], responses: Sequence[str], records: Sequence[PromptRecord]
) -> list[float]:
    """The gold score of each reply (stripped) to its record's dialogue."""
    return [
        judge_task(parse_task(rec.prompt), reply.strip()).score
        for rec, reply in zip(records, responses, strict=True)
    ]


def arithmetic_exact_match(
    prompts: Sequence[str], responses: Sequence[str], records: Sequence[PromptRecord]
) -> list[float]:
    """1.0 where the reply's last integer is the arithmetic answer; 0.0 otherwise."""
    out = []
    for rec, reply in zip(records, responses, strict=True):
        try:
            task = parse_task(rec.prompt)
        except PromptParseError:
            out.append(0.0)
            continue
        numbers = _INTEGER.findall(reply)
        hit = task.family == "arithmetic" and bool(numbers) and int(numbers[-1]) == task.slots["c"]
        out.append(float(hit))
    return out
