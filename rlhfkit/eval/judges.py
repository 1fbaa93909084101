"""Judges: who decides which reply is better, and how to ask them fairly.

Three kinds of judge, all plain callables so a user can plug in anything (a rule, an external
API, an LLM judge):

- a **pointwise judge** `(prompts, replies) -> list[float]`, higher is better: the simulated
  world's gold scorer (`gold_judge`), or a reward model (`rlhfkit.models` scorers wrapped by the
  caller). This is the same signature PPO's `judges={"gold": fn}` expects.
- a **pairwise judge** `(prompt, reply_a, reply_b) -> P(a is better)` in [0, 1] (the
  `PairwiseJudge` protocol).
- `pairwise_from_pointwise` turns a pointwise score into a pairwise verdict: 1 if a scores higher,
  0 if lower, ½ on a tie (|Δ| ≤ `tie_tol`).

Implementation details and their sources:

1. Position bias: LLM judges prefer the reply shown first (or second) at rates far from chance
   (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", §3.3; Wang et
   al. 2023, "Large Language Models are not Fair Evaluators"). `symmetric_preference` queries the
   judge in both orders and averages, p = ½·(J(x, a, b) + 1 − J(x, b, a)) — the "swap and average"
   remedy of both papers. Any additive position bias J(x, a, b) = q(a, b) + c with
   q(b, a) = 1 − q(a, b) cancels exactly, and the result is order-symmetric by construction:
   p(x, a, b) + p(x, b, a) = 1 for every judge.
2. Ties count half (the convention of AlpacaEval and Chatbot Arena win rates): a pairwise verdict
   of ½ adds half a win.
3. `judge_both_orders` keeps every judgment (both orders, raw outputs) for audit and reports
   the position-inconsistency rate: the share of items whose decisive verdict names a different
   reply when the order is swapped (Zheng et al. 2023 Table 2 "consistency"). For hard verdicts
   (an API judge answering A or B, J ∈ {0, 1}) the averaged outcome of such an item is ½:
   an order-dependent verdict counts as a tie. A judge that always picks the first position
   gives win rate ½ and inconsistency 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rlhfkit.eval.winrate import WinRate, win_rate
from rlhfkit.rollout.llm_judge import Judgment, ask_both_orders

__all__ = [
    "Judgment",
    "PairwiseJudge",
    "PairwiseReport",
    "gold_judge",
    "gold_judgements",
    "judge_both_orders",
    "pairwise_from_pointwise",
    "pairwise_outcomes",
    "score_outcomes",
    "symmetric_preference",
]


class PairwiseJudge(Protocol):
    """`judge(prompt, reply_a, reply_b)` → probability in [0, 1] that `reply_a` is the better reply."""

    def __call__(self, prompt: Any, reply_a: str, reply_b: str) -> float: ...


def symmetric_preference(judge: PairwiseJudge, prompt: Any, reply_a: str, reply_b: str) -> float:
    """P(a better than b), asked in both orders and averaged to cancel position bias.

    p = ½·(J(x, a, b) + 1 − J(x, b, a)). Order-symmetric for any judge: p(a, b) = 1 − p(b, a);
    an additive bias toward the first (or second) position cancels exactly. Raises ValueError if
    the judge answers outside [0, 1]. Reference: Zheng et al. 2023 §3.3; Wang et al. 2023.
    """
    first = float(judge(prompt, reply_a, reply_b))
    second = float(judge(prompt, reply_b, reply_a))
    for value, order in ((first, "(a, b)"), (second, "(b, a)")):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"pairwise judge returned {value} for order {order}; expected [0, 1]")
    return 0.5 * (first + 1.0 - second)


def pairwise_outcomes(
    judge: PairwiseJudge, prompts: Sequence[Any], replies_a: Sequence[str], replies_b: Sequence[str]
) -> list[float]:
    """`symmetric_preference` for each (prompt, a, b) triple: the outcomes a win rate averages."""
    if not len(prompts) == len(replies_a) == len(replies_b):
        raise ValueError(
            f"pairwise_outcomes: {len(prompts)} prompts, {len(replies_a)} replies a, "
            f"{len(replies_b)} replies b; they must be the same length"
        )
    return [
        symmetric_preference(judge, p, a, b)
        for p, a, b in zip(prompts, replies_a, replies_b, strict=True)
    ]


@dataclass(frozen=True)
class PairwiseReport:
    win_rate: WinRate  # of the a replies, from the order-averaged outcomes
    inconsistency: float  # share of items whose verdict changed with the order
    judgments: list[Judgment]

    def to_dict(self) -> dict[str, Any]:
        return {**self.win_rate.to_dict(), "position_inconsistency": self.inconsistency}


def judge_both_orders(
    judge: Any,
    prompts: Sequence[Any],
    replies_a: Sequence[str],
    replies_b: Sequence[str],
    level: float = 0.95,
) -> PairwiseReport:
    """Ask `judge` about every (prompt, a, b) in both orders; win rate of a, inconsistency rate,
    every judgment. `judge` is a `PairwiseJudge`, or has `judge_many(items) -> [Verdict]` /
    `judge(prompt, a, b) -> Verdict` (the LLM judges), whose raw outputs are then kept
    (`rollout.llm_judge.ask_both_orders`)."""
    if not len(prompts) == len(replies_a) == len(replies_b):
        raise ValueError(
            f"judge_both_orders: {len(prompts)} prompts, {len(replies_a)} replies a, "
            f"{len(replies_b)} replies b; they must be the same length"
        )
    judgments = ask_both_orders(judge, list(zip(prompts, replies_a, replies_b, strict=True)))
    n = len(judgments)
    return PairwiseReport(
        win_rate([j.outcome for j in judgments], level),
        sum(j.inconsistent for j in judgments) / n if n else 0.0,
        judgments,
    )


def pairwise_from_pointwise(
    score: Callable[[Any, str], float], tie_tol: float = 1e-9
) -> PairwiseJudge:
    """A pairwise judge from a pointwise score s(x, y): 1 if s(x, a) > s(x, b) + tol, 0 if
    s(x, a) < s(x, b) − tol, ½ otherwise (a tie counts half). Position-free by construction."""

    def judge(prompt: Any, reply_a: str, reply_b: str) -> float:
        return score_outcomes([score(prompt, reply_a)], [score(prompt, reply_b)], tie_tol)[0]

    return judge


def score_outcomes(
    scores_a: Sequence[float], scores_b: Sequence[float], tie_tol: float = 1e-9
) -> list[float]:
    """Per-item outcome of a against b under a pointwise score: 1 if a > b + tol, 0 if
    a < b − tol, ½ otherwise (a tie counts half)."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"score_outcomes: {len(scores_a)} scores a but {len(scores_b)} scores b")
    return [
        1.0 if a - b > tie_tol else 0.0 if b - a > tie_tol else 0.5
        for a, b in zip(scores_a, scores_b, strict=True)
    ]


def gold_judgements(prompts: Sequence[Any], replies: Sequence[str]) -> list[Any]:
    """The simulated world's `GoldJudgement(score, family, behaviour)` for each (prompt, reply).

    Prompts may be `Dialogue`s, strings (one user turn) or messages lists; raises the world's
    `PromptParseError` for a prompt the world did not write.
    """
    from rlhfkit.sim.gold import judge  # the gold scorer belongs to the simulated world only

    if len(prompts) != len(replies):
        raise ValueError(f"gold judge: {len(prompts)} prompts but {len(replies)} replies")
    return [judge(p, r) for p, r in zip(prompts, replies, strict=True)]


def gold_judge(prompts: Sequence[Any], replies: Sequence[str]) -> list[float]:
    """Pointwise gold judge (the simulated world's true preference): the gold score per reply."""
    return [j.score for j in gold_judgements(prompts, replies)]


def gold_judge_on_texts(
    prompt_texts: Mapping[str, Any],
) -> Callable[[list[str], list[str]], list[float]]:
    """The gold judge as PPO calls it (`judges=` or `reward_fn=`): PPO passes each prompt as the
    text the policy saw (the chat template applied), which the world cannot parse, so
    `prompt_texts` maps that text back to the world's dialogue. Replies are judged stripped.
    A text not in the map raises a KeyError naming it."""

    def judge(prompts: list[str], replies: list[str]) -> list[float]:
        missing = [p for p in prompts if p not in prompt_texts]
        if missing:
            raise KeyError(f"gold judge: prompt text not in the map: {missing[0]!r}")
        return gold_judge([prompt_texts[p] for p in prompts], [r.strip() for r in replies])

    return judge
