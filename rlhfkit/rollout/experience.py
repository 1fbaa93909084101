"""The scoring pass: everything PPO records about a rollout before it updates anything.

`make_experience` adds to a `Rollout` the rollout policy's log-probs (`old_logprobs`), the
reference policy's (`ref_logprobs`, only when a KL term needs them), the critic's values
(`old_values`, only for an algorithm with a critic) and the reward (total and components).

Implementation details and their sources:

1. `old_logprobs` are the log-probs the sampler already computed from its KV-cached logits
   (`generate` keeps them); recomputing them with a full forward gives the same numbers within
   float tolerance (tested), so the pass saves one policy forward. `reuse_sampling_logprobs=False`
   recomputes them (e.g. under bf16 autocast, where cached and full forwards round differently).
2. Reference, critic and reward forwards run under `torch.inference_mode()` (no autograd
   bookkeeping), on the trimmed batch (no all-padding column), with the LM head applied to
   response positions only (`response_logprobs`).
3. With a LoRA policy and no separate reference, the reference is the same model with its
   adapters disabled (peft `disable_adapter()`): no second copy in memory (TRL `PPOTrainer`
   and OpenRLHF do the same for peft models).
4. Values are read where each response token is chosen (column P + t − 1), as the log-probs are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rlhfkit.rollout.forward import response_logprobs, trim_padding
from rlhfkit.rollout.generate import Rollout
from rlhfkit.rollout.scorers import Reward
from rlhfkit.types import PromptRecord

__all__ = [
    "Experience",
    "cat_experiences",
    "episode_returns",
    "make_experience",
    "reference_context",
    "with_turn_rewards",
]


@dataclass
class Experience:
    """A scored rollout of B sequences (B = prompts × G samples, groups contiguous).

    Optional fields are None when the algorithm does not need them: `ref_logprobs` when there is
    no KL term (no reference forward is run), `old_values` without a critic (GRPO, RLOO, ...).
    """

    # sequences: prompt (left-padded to P columns) | response (right-padded to R columns)
    input_ids: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R) bool, True = valid
    prompt_len: int  # P
    # per response token
    response_mask: torch.Tensor  # (B, R) bool, True up to and including EOS
    old_logprobs: torch.Tensor  # (B, R) float32, the sampling policy's, 0 at padding
    ref_logprobs: torch.Tensor | None  # (B, R) float32, the reference's, or None
    old_values: torch.Tensor | None  # (B, R) float32, the critic's V(s_t), or None
    # per sequence
    scores: torch.Tensor  # (B,) float32, the reward (weighted sum of its components)
    score_parts: dict[str, torch.Tensor] = field(default_factory=dict)  # name → (B,)
    # per response token: the rollout engine's own log-probs of the sampled tokens (B, R)
    # float32, 0 at padding — equal to old_logprobs when the trainer reused them; None when the
    # engine kept none
    sampling_logprobs: torch.Tensor | None = None
    # per response token: rewards of a multi-turn episode's turns before the last, each on its
    # turn's last sampled token (B, R) float32 (the last turn's is `scores`); None: one turn
    turn_rewards: torch.Tensor | None = None

    PER_TOKEN = ("response_mask", "old_logprobs", "ref_logprobs", "old_values", "sampling_logprobs",
                 "turn_rewards")  # fmt: skip

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]

    def select(self, index: torch.Tensor | Sequence[int]) -> Experience:
        """The rows `index` (a mini-batch), trimmed of columns that are padding in all of them."""
        index = torch.as_tensor(index, dtype=torch.long)
        input_ids, mask, prompt_len = trim_padding(
            self.input_ids[index], self.attention_mask[index], self.prompt_len
        )
        keep_r = input_ids.shape[1] - prompt_len
        per_token = {
            k: None if getattr(self, k) is None else getattr(self, k)[index][:, :keep_r]
            for k in self.PER_TOKEN
        }
        return Experience(
            input_ids=input_ids,
            attention_mask=mask,
            prompt_len=prompt_len,
            scores=self.scores[index],
            score_parts={k: v[index] for k, v in self.score_parts.items()},
            **per_token,
        )


def cat_experiences(parts: Sequence[Experience], pad_id: int) -> Experience:
    """Stack experiences of different widths: prompts left-padded, responses right-padded to the
    widest (dynamic sampling gathers its batch over several rollouts)."""
    if len(parts) == 1:
        return parts[0]
    p = max(e.prompt_len for e in parts)
    r = max(e.input_ids.shape[1] - e.prompt_len for e in parts)

    def widen(
        x: torch.Tensor, prompt_len: int, left: int, value: float | int | bool
    ) -> torch.Tensor:
        right = r - (x.shape[1] - prompt_len)
        return torch.nn.functional.pad(x, (left, right), value=value)

    def per_token(k: str) -> torch.Tensor | None:
        if getattr(parts[0], k) is None:
            return None
        return torch.cat([widen(getattr(e, k), 0, 0, False if k == "response_mask" else 0.0)
                          for e in parts])  # fmt: skip

    return Experience(
        input_ids=torch.cat(
            [widen(e.input_ids, e.prompt_len, p - e.prompt_len, pad_id) for e in parts]
        ),
        attention_mask=torch.cat(
            [widen(e.attention_mask, e.prompt_len, p - e.prompt_len, False) for e in parts]
        ),
        prompt_len=p,
        scores=torch.cat([e.scores for e in parts]),
        score_parts={k: torch.cat([e.score_parts[k] for e in parts]) for k in parts[0].score_parts},
        **{k: per_token(k) for k in Experience.PER_TOKEN},
    )


def reference_context(policy: nn.Module, ref_policy: nn.Module | None) -> Any:
    """Context in which `ref_policy or policy` computes reference log-probs: the policy with
    its LoRA adapters disabled when there is no separate reference model."""
    if ref_policy is not None:
        return contextlib.nullcontext()
    disable = getattr(policy, "disable_adapter", None)
    if disable is None:
        raise ValueError("no reference policy given and the policy has no adapters to disable")
    return disable()


def make_experience(
    rollout: Rollout,
    prompts: Sequence[str],
    responses: Sequence[str],
    records: Sequence[PromptRecord],
    *,
    policy: nn.Module,
    reward: Reward,
    temperature: float,
    ref_policy: nn.Module | None = None,
    use_ref: bool = True,
    critic: Any | None = None,
    reuse_sampling_logprobs: bool = True,
    action_mask: torch.Tensor | None = None,
) -> Experience:
    """Score a rollout: old log-probs, reference log-probs (when `use_ref`; `ref_policy=None`
    means the policy with adapters disabled, LoRA), old values (when a `critic` with
    `values(input_ids, attention_mask, columns) -> (B, T)` is given) and the reward.
    `action_mask` (B, R) bool: the response tokens the policy sampled (a multi-turn episode's
    environment tokens are attended to but False there); None: every valid response token."""
    input_ids, mask, prompt_len = trim_padding(
        rollout.input_ids, rollout.attention_mask, rollout.prompt_len
    )
    r = input_ids.shape[1] - prompt_len
    response_mask = mask[:, prompt_len:].bool()
    if action_mask is not None:
        response_mask = response_mask & action_mask[:, :r].to(response_mask.device)
    zero = torch.zeros((), device=input_ids.device)

    def masked(x: torch.Tensor | None) -> torch.Tensor | None:
        # cloned outside inference mode: inference tensors may not be saved for a backward pass
        return None if x is None else torch.where(response_mask, x.float(), zero).clone()

    with torch.inference_mode():
        if reuse_sampling_logprobs and rollout.logprobs is not None:
            old_logprobs = rollout.logprobs[:, :r].float()
        else:
            old_logprobs, _ = response_logprobs(policy, input_ids, mask, prompt_len, temperature)
        ref_logprobs = None
        if use_ref:
            with reference_context(policy, ref_policy):
                ref_logprobs, _ = response_logprobs(
                    ref_policy if ref_policy is not None else policy,
                    input_ids,
                    mask,
                    prompt_len,
                    temperature,
                )
        old_values = None
        if critic is not None:
            old_values = critic.values(input_ids, mask, slice(prompt_len - 1, -1))
        trimmed = Rollout(
            input_ids[:, :prompt_len],
            mask[:, :prompt_len],
            input_ids[:, prompt_len:],
            response_mask,
        )
        scores, parts = reward(prompts, responses, trimmed, records)
        sampling = None if rollout.logprobs is None else rollout.logprobs[:, :r].float()
    return Experience(
        input_ids=input_ids.clone(),
        attention_mask=mask.clone(),
        prompt_len=prompt_len,
        response_mask=response_mask.clone(),
        old_logprobs=masked(old_logprobs),
        ref_logprobs=masked(ref_logprobs),
        old_values=masked(old_values),
        sampling_logprobs=masked(sampling),
        scores=scores.float().clone().to(input_ids.device),
        score_parts={k: v.float().clone().to(input_ids.device) for k, v in parts.items()},
    )


def with_turn_rewards(rewards: torch.Tensor, exp: Experience) -> torch.Tensor:
    """Per-token rewards (B, R) plus a multi-turn episode's earlier turns' rewards, each on its
    turn's last sampled token (unchanged for one-turn rollouts). PPO's GAE credits them."""
    return rewards if exp.turn_rewards is None else rewards + exp.turn_rewards


def episode_returns(exp: Experience) -> torch.Tensor:
    """(B,) the episode's return: the score plus the earlier turns' rewards (the score alone for
    one-turn rollouts): the outcome the critic-free estimators use (verl
    `compute_grpo_outcome_advantage` sums the token-level rewards the same way)."""
    return exp.scores if exp.turn_rewards is None else exp.scores + exp.turn_rewards.sum(1)
