"""Best-of-n: n replies per prompt from a policy, scored, the best (and the worst) picked.

Implementation details and their sources:

1. Sampling: each prompt is repeated n times in a row and the batch goes through the KV-cached
   sampler (`rollout.sample_batches`), one `torch.Generator` seeded from `seed` driving every
   draw, the policy in eval mode. The same (records, n, seed, rollout settings) give the same
   replies, which the demo's best-of-n ceiling table (`eval.ceiling`) relies on.
2. Scoring: any `rollout` scorer — a reward model on the sampled ids (`RewardModelScorer`, the
   score read at the last real token), any Python function of (prompts, replies)
   (`CallableScorer`; prompts are the records' dialogues), and a weighted sum of several.
3. Selection: the highest selection score among the first n samples; ties go to the earliest
   sample (a fixed rule, independent of the scores). The worst is the lowest, earliest on ties.
4. KL: best-of-n's KL to the sampling policy is log n − (n − 1)/n nats (`core.best_of_n_kl`;
   Stiennon et al. 2020 app. G.3), reported next to every score.
5. Outputs as the readers read them: the best reply per prompt (prompt/response: SFT data for
   rejection-sampling fine-tuning, Touvron et al. 2023 §3.2.2, Dong et al. 2023 "RAFT") and
   best-vs-worst pairs (prompt/chosen/rejected, for `rlhfkit rm` or `rlhfkit dpo`; prompts whose
   best and worst reply are the same text or score are left out: no preference to learn), and
   empty replies are never written as training data (the readers reject them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.engine import eval_mode
from rlhfkit.rollout import RolloutEngine, Scorer, sample_batches
from rlhfkit.types import PromptRecord

__all__ = ["Candidates", "pick_best", "pick_worst", "sample_candidates", "weighted"]


@dataclass
class Candidates:
    """n replies per prompt in sampling order and their scores, per scorer name."""

    records: list[PromptRecord]
    replies: list[list[str]]  # [prompt][sample]
    scores: dict[str, list[list[float]]]  # name → [prompt][sample]
    n: int


def sample_candidates(
    policy: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[PromptRecord],
    rollout_cfg: Any,
    n: int,
    seed: int,
    scorers: Mapping[str, Scorer],
    max_prompt_length: int = 256,
    engine: RolloutEngine | None = None,
) -> Candidates:
    """Sample n replies per record (see the module docstring) and score each with every scorer;
    `engine`: the rollout engine that samples (None: the local sampler on `policy`)."""
    if n < 1:
        raise ValueError(f"best-of-n: n must be ≥ 1, got {n}")
    repeated = [rec for rec in records for _ in range(n)]
    replies: list[str] = []
    flat: dict[str, list[float]] = {name: [] for name in scorers}
    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    with eval_mode(policy), torch.no_grad():
        batches = sample_batches(
            engine or policy, tokenizer, repeated, rollout_cfg, generator, max_prompt_length
        )
        for start, rollout, texts in batches:
            replies.extend(texts)
            prompts = [rec.prompt for rec in repeated[start : start + len(texts)]]
            for name, scorer in scorers.items():
                flat[name].extend(scorer(prompts, texts, rollout).tolist())

    def per_prompt(values: list[Any]) -> list[list[Any]]:
        return [values[i * n : (i + 1) * n] for i in range(len(records))]

    return Candidates(
        list(records), per_prompt(replies), {k: per_prompt(v) for k, v in flat.items()}, n
    )


def weighted(
    scores: Mapping[str, list[list[float]]], weights: Mapping[str, float]
) -> list[list[float]]:
    """Σ_k w_k·s_k per sample: the selection score of several scorers."""
    names = list(weights)
    first = scores[names[0]]
    return [
        [sum(weights[k] * scores[k][i][j] for k in names) for j in range(len(first[i]))]
        for i in range(len(first))
    ]


def pick_best(selector: Sequence[float], n: int | None = None) -> int:
    """Index of the highest score among the first n (all when None); ties to the earliest."""
    n = len(selector) if n is None else n
    return max(range(n), key=lambda i: (selector[i], -i))


def pick_worst(selector: Sequence[float], n: int | None = None) -> int:
    """Index of the lowest score among the first n (all when None); ties to the earliest."""
    n = len(selector) if n is None else n
    return min(range(n), key=lambda i: (selector[i], i))
