"""Which sampled reply of a prompt is chosen and which rejected: by the reward (`label_pairs`) or
by a pairwise LLM judge asked in both orders (`judge_pairs`, `judge:` in the config).

Implementation details and their sources:

1. By the reward: per prompt the highest- and the lowest-scored of its K replies (Guo et al.
   2024 with K = 2; best-vs-worst of K, Xiong et al. 2024 and OpenRLHF's iterative DPO); equal
   scores give no pair.
2. By a pairwise judge (Guo et al. 2024 label with an LLM annotator; TRL `OnlineDPOTrainer`
   takes a `judge`): every unordered pair {i, j} of a prompt's K replies is asked as (y_i, y_j)
   and as (y_j, y_i) (`rollout.ask_both_orders`, one batched call per order for the whole
   iteration), because LLM judges favour a position (Zheng et al. 2023 §3.3; Wang et al. 2023).
   The order-averaged outcome is o_ij = ½·(J(x, y_i, y_j) + 1 − J(x, y_j, y_i)) (as
   `rlhfkit eval`); a judgment whose two orders name different replies (position-inconsistent,
   `Judgment.inconsistent`) carries no preference and counts as o_ij = ½.
3. The pair from a judge: each reply's round-robin score w_i = Σ_{j≠i} o_ij, then the reward
   route's rule on w (the highest vs the lowest, the first of equals; all equal: no pair). With
   K = 2 that is: the pair is kept, ordered by the judge, unless its one judgment is a tie
   (o = ½) or position-inconsistent. K replies cost K·(K − 1) judge calls per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.rollout import ask_both_orders

__all__ = ["JudgedPairs", "judge_pairs", "label_pairs"]


def label_pairs(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(chosen rows, rejected rows, ties dropped) of a batch of prompts × K samples (groups
    contiguous): per prompt the highest- and the lowest-scored sample (the first of equals);
    prompts whose K scores are all equal give no pair."""
    grouped = scores.view(-1, k)
    base = torch.arange(grouped.shape[0]) * k
    best, worst = base + grouped.argmax(1), base + grouped.argmin(1)
    keep = grouped.amax(1) > grouped.amin(1)
    return best[keep], worst[keep], int((~keep).sum())


@dataclass(frozen=True)
class JudgedPairs:
    chosen: torch.Tensor  # (P,) rows of the batch, P ≤ prompts
    rejected: torch.Tensor  # (P,)
    ties: int  # prompts without a pair (every round-robin score equal)
    judge_ties: int  # judgments with o = ½ whose orders agreed (the judge called a tie)
    order_disagreements: int  # judgments whose verdict changed with the order
    judgments: int  # unordered reply pairs judged (each asked twice)
    scores: torch.Tensor  # (B·K,) round-robin score w_i of every sampled reply


def judge_pairs(judge: Any, prompts: Sequence[Any], replies: Sequence[str], k: int) -> JudgedPairs:
    """Label B prompts × K replies (groups of K contiguous rows; `prompts[r]` is row r's
    prompt) with a pairwise `judge` asked in both orders (module docstring, details 2–3).
    `judge`: anything `rollout.ask_both_orders` takes (`LocalLMJudge`, `OpenAIJudge`, or a
    callable `(prompt, a, b) -> P(a better)`)."""
    rows = len(replies)
    index = [(g + i, g + j) for g in range(0, rows, k) for i in range(k) for j in range(i + 1, k)]
    judgments = ask_both_orders(judge, [(prompts[a], replies[a], replies[b]) for a, b in index])
    scores = torch.zeros(rows, dtype=torch.float64)
    for (a, b), judgment in zip(index, judgments, strict=True):
        outcome = 0.5 if judgment.inconsistent else judgment.outcome
        scores[a] += outcome
        scores[b] += 1.0 - outcome
    chosen, rejected, ties = label_pairs(scores, k)
    return JudgedPairs(
        chosen, rejected, ties,
        judge_ties=sum(j.outcome == 0.5 and not j.inconsistent for j in judgments),
        order_disagreements=sum(j.inconsistent for j in judgments),
        judgments=len(judgments), scores=scores,
    )  # fmt: skip
