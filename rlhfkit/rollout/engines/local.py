"""`rollout.engine: local` (the default): rlhfkit's own KV-cached sampler (`rollout.generate`)
run on the policy the trainer holds. It samples from the live weights, so pushing weights is a
no-op, and its log-probs are the trainer's own arithmetic (`exact`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from rlhfkit.data import stop_token_ids
from rlhfkit.engine import gathered
from rlhfkit.rollout.generate import Rollout, RolloutConfig, generate

__all__ = ["LocalEngine"]


class LocalEngine:
    name = "local"
    exact = True

    def __init__(self, policy: nn.Module, tokenizer: Any) -> None:
        self.policy = policy  # as the trainer holds it (a DDP / FSDP2 wrapper is fine)
        self.tokenizer = tokenizer
        self.weights_version = 0

    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        cfg: RolloutConfig,
        seeds: torch.Tensor,
        *,
        keep_logprobs: bool = True,
    ) -> Rollout:
        tok = self.tokenizer
        with gathered(self.policy) as policy:
            device = next(policy.parameters()).device
            return generate(
                policy, prompt_ids.to(device), prompt_mask.to(device), cfg, seeds,
                eos_token_id=stop_token_ids(tok), pad_token_id=tok.pad_token_id,
                tokenizer=tok, keep_logprobs=keep_logprobs,
            )  # fmt: skip

    def push_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        self.weights_version = version  # the sampler reads the live weights

    def close(self) -> None:
        pass
