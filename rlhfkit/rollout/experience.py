"""The scoring pass: everything PPO records about a rollout before it updates anything.

`make_experience` adds to a `Rollout` the rollout policy's log-probs (`old_logprobs`), the
reference policy's (`ref_logprobs`), the critic's values (`old_values`) and the sequence scores.

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
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from rlhfkit.rollout.forward import response_logprobs, trim_padding
from rlhfkit.rollout.generate import Rollout
from rlhfkit.rollout.scorers import Scorer

__all__ = ["Experience", "make_experience", "reference_context"]


@dataclass
class Experience:
    """A scored rollout. `input_ids`/`attention_mask` (B, P + R) = prompt | response;
    `response_mask`, `old_logprobs`, `ref_logprobs`, `old_values` (B, R); `scores` (B,)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    old_values: torch.Tensor
    scores: torch.Tensor
    prompt_len: int

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]

    def select(self, index: torch.Tensor) -> Experience:
        """The rows `index` (a mini-batch), trimmed of columns that are padding in all of them."""
        rows = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "prompt_len"}
        rows = {k: v[index] for k, v in rows.items()}
        input_ids, mask, prompt_len = trim_padding(
            rows["input_ids"], rows["attention_mask"], self.prompt_len
        )
        keep_r = input_ids.shape[1] - prompt_len
        per_token = ("response_mask", "old_logprobs", "ref_logprobs", "old_values")
        rows.update({k: rows[k][:, :keep_r] for k in per_token})
        return Experience(
            input_ids=input_ids,
            attention_mask=mask,
            prompt_len=prompt_len,
            **{k: v for k, v in rows.items() if k not in ("input_ids", "attention_mask")},
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
    *,
    policy: nn.Module,
    ref_policy: nn.Module | None,
    critic: Any,
    scorer: Scorer,
    temperature: float,
    reuse_sampling_logprobs: bool = True,
) -> Experience:
    """Score a rollout: old/ref log-probs, old values (B, R) and scores (B,).

    `ref_policy=None` means the policy with adapters disabled (LoRA). `critic` has
    `values(input_ids, attention_mask) -> (B, T)`. `scorer` follows the `Scorer` protocol.
    """
    input_ids, mask, prompt_len = trim_padding(
        rollout.input_ids, rollout.attention_mask, rollout.prompt_len
    )
    r = input_ids.shape[1] - prompt_len
    response_mask = mask[:, prompt_len:].bool()
    with torch.inference_mode():
        if reuse_sampling_logprobs and rollout.logprobs is not None:
            old_logprobs = rollout.logprobs[:, :r].float()
        else:
            old_logprobs, _ = response_logprobs(policy, input_ids, mask, prompt_len, temperature)
        with reference_context(policy, ref_policy):
            ref_logprobs, _ = response_logprobs(
                ref_policy if ref_policy is not None else policy,
                input_ids,
                mask,
                prompt_len,
                temperature,
            )
        old_values = critic.values(input_ids, mask, slice(prompt_len - 1, -1)).float()
        trimmed = Rollout(
            input_ids[:, :prompt_len],
            mask[:, :prompt_len],
            input_ids[:, prompt_len:],
            response_mask,
        )
        scores = scorer(prompts, responses, trimmed).to(old_values.device)
    zero = torch.zeros((), device=old_values.device)
    # cloned outside inference mode: inference tensors may not be saved for a backward pass
    return Experience(
        input_ids=input_ids.clone(),
        attention_mask=mask.clone(),
        response_mask=response_mask.clone(),
        old_logprobs=torch.where(response_mask, old_logprobs, zero).clone(),
        ref_logprobs=torch.where(response_mask, ref_logprobs, zero).clone(),
        old_values=torch.where(response_mask, old_values, zero).clone(),
        scores=scores.clone(),
        prompt_len=prompt_len,
    )
