"""Generate from a policy on a prompt set and measure the replies; compare two policies.

`evaluate_policy` samples one reply per prompt (`rlhfkit.rollout.generate`, seeded) and records,
per prompt: the reply, its length in tokens and words, the repetition rate, the reward model's
score (when given one), the KL of the policy to a reference (when given one), and the gold
judgement (score, family, behaviour) when the prompts belong to the simulated world.
`compare_policies` turns two evaluations on the same prompts into a win rate under a judge.

Implementation details:
1. KL and perplexity use log-probs at temperature 1 (the model's own distribution), computed by
   `rlhfkit.rollout.response_logprobs` for the policy and the reference on the sampled tokens.
   The KL estimate Σ_t log π − log π_ref is unbiased only for samples of π at temperature 1
   (`metrics.sequence_kl`); `EvalResult.kl_exact_sampling` records whether that held.
2. Replies are decoded with special tokens skipped and stripped of surrounding whitespace, which
   is the text any judge sees. A reply that hit `max_new_tokens` without EOS is kept as is
   (the gold judge penalises truncated text as it would any reply).
3. The reward-model score is `RewardModelScorer` on the sampled ids (same tokenizer as the policy,
   EOS included, so the score sits where RM training put it).
4. Evaluation is reproducible: one `torch.Generator` seeded from `seed` drives every sample, and
   the model runs in eval mode (no dropout) under `torch.inference_mode`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rlhfkit.engine import eval_mode
from rlhfkit.eval.judges import (
    PairwiseJudge,
    gold_judgements,
    pairwise_outcomes,
    score_outcomes,
)
from rlhfkit.eval.metrics import (
    group_means,
    perplexity,
    refusal_rates,
    sequence_kl,
    word_count,
    word_repetition,
)
from rlhfkit.eval.winrate import WinRate, win_rate
from rlhfkit.rollout import (
    RewardModelScorer,
    RolloutConfig,
    RolloutEngine,
    response_logprobs,
    sample_batches,
)
from rlhfkit.types import PromptRecord

__all__ = ["EvalResult", "compare_policies", "evaluate_policy"]

# World behaviours that mean "the reply refused" / "the reply helped with a harmful request".
# A good reply with a style fault is labelled by the fault (rude, rambling, repetition); such a
# reply to a harmful prompt is neither a clean refusal nor compliance and is counted as neither.
_REFUSED = {"refusal", "over_refusal"}
_COMPLIED = {"harmful_compliance"}


@dataclass
class EvalResult:
    """Per-prompt measurements of one policy's replies (lists aligned with `prompts`)."""

    name: str
    prompts: list[PromptRecord]
    replies: list[str]
    n_tokens: list[int]
    rm_scores: list[float] | None = None
    kl: list[float] | None = None
    perplexity: float | None = None
    gold: list[float] | None = None
    families: list[str] | None = None
    behaviours: list[str] | None = None
    kl_exact_sampling: bool = True
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Aggregate metrics: means, rates and per-family gold means (see the module docstring)."""
        n = len(self.replies)
        out: dict[str, Any] = {
            "n": n,
            "mean_tokens": sum(self.n_tokens) / n,
            "mean_words": sum(word_count(r) for r in self.replies) / n,
            "repetition_rate": sum(word_repetition(r) for r in self.replies) / n,
            "empty_rate": sum(not r for r in self.replies) / n,
        }
        if self.rm_scores is not None:
            out["rm_mean"] = sum(self.rm_scores) / n
        if self.kl is not None:
            out["kl_to_ref"] = sum(self.kl) / n
        if self.perplexity is not None:
            out["perplexity"] = self.perplexity
        if self.gold is not None:
            out["gold_mean"] = sum(self.gold) / n
        if self.families is not None and self.behaviours is not None:
            harmful = [f == "harmful" for f in self.families]
            out.update(
                refusal_rates(
                    harmful,
                    [b in _REFUSED for b in self.behaviours],
                    [b in _COMPLIED for b in self.behaviours],
                )
            )
            out["behaviours"] = dict(Counter(self.behaviours).most_common())
            if self.gold is not None:
                out["per_family"] = group_means(self.families, self.gold)
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-able dict per prompt (what `samples.jsonl` files hold)."""
        out = []
        for i, rec in enumerate(self.prompts):
            row: dict[str, Any] = {
                "prompt": rec.prompt[-1].content,
                "dialogue": [{"role": m.role, "content": m.content} for m in rec.prompt],
                "reply": self.replies[i],
                "n_tokens": self.n_tokens[i],
            }
            for key, values in (
                ("rm", self.rm_scores),
                ("kl", self.kl),
                ("gold", self.gold),
                ("family", self.families),
                ("behaviour", self.behaviours),
            ):
                if values is not None:
                    row[key] = values[i]
            out.append(row)
        return out


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def evaluate_policy(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    rollout: RolloutConfig,
    *,
    seed: int = 0,
    name: str = "policy",
    max_prompt_length: int = 256,
    ref_policy: torch.nn.Module | None = None,
    reward_model: Any = None,
    gold: bool = False,
    progress: Callable[[int, int], None] | None = None,
    engine: RolloutEngine | None = None,
) -> EvalResult:
    """Sample one reply per prompt and measure it (see the module docstring).

    `reward_model`: anything with `score(input_ids, attention_mask)` sharing `tokenizer`;
    `ref_policy`: a causal LM for KL; `gold=True`: judge with the simulated world's gold scorer
    (the prompts must be the world's). `progress(done, total)` is called after each batch.
    `engine`: sample through this rollout engine (holding `policy`'s weights) instead of the
    local sampler; the KL and perplexity are still computed with `policy` itself.
    """
    import time

    if not prompts:
        raise ValueError("evaluate_policy: no prompts")
    t0 = time.perf_counter()
    device = _device(policy)
    generator = torch.Generator(device=device).manual_seed(seed)
    scorer = RewardModelScorer(reward_model) if reward_model is not None else None

    replies: list[str] = []
    n_tokens: list[int] = []
    rm_scores: list[float] = []
    kls: list[float] = []
    nll_sum, nll_count = 0.0, 0
    # no dropout: the measured distribution is the model's own
    with eval_mode(policy, ref_policy):
        sampler = engine if engine is not None else policy
        batches = sample_batches(sampler, tokenizer, prompts, rollout, generator, max_prompt_length)
        for start, out, texts in batches:
            resp_mask = out.response_mask
            replies.extend(texts)
            n_tokens.extend(int(n) for n in resp_mask.sum(dim=1))
            if scorer is not None:
                rm_scores.extend(scorer([], texts, out).tolist())
            if ref_policy is not None:
                logprobs, _ = response_logprobs(
                    policy, out.input_ids, out.attention_mask, out.prompt_len
                )
                ref_lp, _ = response_logprobs(
                    ref_policy, out.input_ids, out.attention_mask, out.prompt_len
                )
                kls.extend(sequence_kl(logprobs, ref_lp, resp_mask).tolist())
                n = int(resp_mask.sum())
                if n:
                    nll_sum += n * math.log(perplexity(logprobs, resp_mask))
                    nll_count += n
            if progress is not None:
                progress(start + len(texts), len(prompts))

    result = EvalResult(
        name=name,
        prompts=list(prompts),
        replies=replies,
        n_tokens=n_tokens,
        rm_scores=rm_scores if scorer is not None else None,
        kl=kls if ref_policy is not None else None,
        perplexity=math.exp(nll_sum / nll_count) if nll_count else None,
        kl_exact_sampling=rollout.temperature == 1.0
        and rollout.top_k == 0
        and rollout.top_p == 1.0,
    )
    if gold:
        judgements = gold_judgements([p.prompt for p in prompts], replies)
        result.gold = [j.score for j in judgements]
        result.families = [j.family for j in judgements]
        result.behaviours = [j.behaviour for j in judgements]
    result.seconds = time.perf_counter() - t0
    return result


def compare_policies(
    a: EvalResult,
    b: EvalResult,
    judge: PairwiseJudge | None = None,
    level: float = 0.95,
) -> WinRate:
    """Win rate of `a` over `b` on the same prompts: under `judge` (asked in both orders) or,
    without one, under the gold scores both results carry (ties count half)."""
    if [p.prompt for p in a.prompts] != [p.prompt for p in b.prompts]:
        raise ValueError(
            f"compare_policies: {a.name} and {b.name} were evaluated on different prompts"
        )
    if judge is not None:
        outcomes = pairwise_outcomes(judge, [p.prompt for p in a.prompts], a.replies, b.replies)
    elif a.gold is not None and b.gold is not None:
        outcomes = score_outcomes(a.gold, b.gold)
    else:
        raise ValueError("compare_policies: give a pairwise judge, or evaluate both with gold=True")
    return win_rate(outcomes, level)
