"""One rollout step for every online algorithm and the in-loop evaluation: prompts → G samples
each → decoded replies → `Experience` (old / reference log-probs, values, reward).

    models = OnlineModels(policy, tokenizer, reward, ref_policy=ref, use_ref=True, critic=None)
    batch = collect(models, source, index, generator, cfg.rollout, group_size=4, autocast=ctx)
    batch.experience, batch.responses, batch.records

Implementation details:

1. Sampling is `generate` (KV cache, stop at EOS / stop strings / the budget); prompts are
   repeated `group_size` times contiguously, so group g is rows g·G … g·G + G − 1.
2. Replies are decoded once (`decode_responses`: valid tokens, special tokens dropped, stripped):
   the same text reaches the reward, the judges, the sample files and `rlhfkit eval`.
3. What is computed depends on the algorithm: the reference forward only when `use_ref` (a KL
   term exists), the critic forward only with a critic.
4. `autocast` is the trainer's precision context (`engine.autocast`), entered around sampling and
   the scoring pass.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlhfkit.data import stop_token_ids
from rlhfkit.rollout.experience import Experience, make_experience
from rlhfkit.rollout.generate import RolloutConfig, generate
from rlhfkit.rollout.prompts import PromptSource
from rlhfkit.rollout.scorers import Reward
from rlhfkit.rollout.texts import decode_responses
from rlhfkit.types import PromptRecord

__all__ = ["Collected", "OnlineModels", "collect"]


@dataclass
class OnlineModels:
    """What a rollout needs: the policy, its tokenizer, the reward, and optionally a reference
    (None with `use_ref`: the policy with LoRA adapters disabled) and a critic."""

    policy: nn.Module
    tokenizer: Any
    reward: Reward
    ref_policy: nn.Module | None = None
    use_ref: bool = True
    critic: Any | None = None


@dataclass
class Collected:
    experience: Experience
    prompts: list[str]  # (B·G) prompt texts as the policy saw them
    responses: list[str]  # (B·G) decoded replies
    records: list[PromptRecord]  # (B·G) the prompts' records
    seconds_generation: float
    seconds_scoring: float


def collect(
    models: OnlineModels,
    source: PromptSource,
    index: Sequence[int],
    generator: torch.Generator,
    cfg: RolloutConfig,
    *,
    group_size: int = 1,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    reuse_sampling_logprobs: bool = True,
) -> Collected:
    """Sample `group_size` replies to each prompt `index` of `source` and score them."""
    tok = models.tokenizer
    device = next(models.policy.parameters()).device
    prompt_ids, prompt_mask = source.collate(index, tok.pad_token_id, group_size)
    t0 = time.perf_counter()
    with autocast():
        rollout = generate(
            models.policy,
            prompt_ids.to(device),
            prompt_mask.to(device),
            cfg,
            generator,
            eos_token_id=stop_token_ids(tok),
            pad_token_id=tok.pad_token_id,
            tokenizer=tok,
        )
    t1 = time.perf_counter()
    rows = [i for i in index for _ in range(group_size)]
    prompts = [source.texts[i] for i in rows]
    records = [source.records[i] for i in rows]
    responses = decode_responses(tok, rollout.response_ids, rollout.response_mask)
    with autocast():
        experience = make_experience(
            rollout,
            prompts,
            responses,
            records,
            policy=models.policy,
            reward=models.reward,
            temperature=cfg.temperature,
            ref_policy=models.ref_policy,
            use_ref=models.use_ref,
            critic=models.critic,
            reuse_sampling_logprobs=reuse_sampling_logprobs,
        )
    t2 = time.perf_counter()
    return Collected(experience, prompts, responses, records, t1 - t0, t2 - t1)
