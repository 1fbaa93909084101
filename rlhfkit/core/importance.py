"""Importance weights between the trainer's old policy and the rollout engine that sampled.

An inference engine (vLLM) samples with its own kernels, so the distribution the tokens were
drawn from, μ (its log-probs: `sampling_logprobs`), is not exactly the trainer's old policy
π_old (`old_logprobs`, recomputed by the trainer). The policy gradient is an expectation under
π_old; reweighting each sampled token by ρ = π_old / μ corrects it (Yao et al. 2025, "Your
efficient RL framework secretly brings you off-policy RL training": truncated importance
sampling; TRL `vllm_importance_sampling_mode`, verl `rollout_correction`, OpenRLHF
`is_correction_type`). The weights multiply the policy loss per token; they are constants
(no gradient flows through them).

    token level:    ρ_t = exp(old_t − μ_t)
    sequence level: ρ_t = exp(Σ_s m_s (old_s − μ_s)) for every token t of the reply
    truncate:       w_t = min(ρ_t, C_max)                    (TIS)
    mask:           w_t = ρ_t · 1[C_min ≤ ρ_t ≤ C_max]        (tokens / replies outside dropped)

Shapes: `old_logprobs`, `sampling_logprobs`, `mask` (B, T); mask True = valid; the weights are 0
at padding whatever the log-probs hold there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["ISLevel", "ISMode", "ISWeights", "importance_weights"]

ISLevel = Literal["token", "sequence"]
ISMode = Literal["truncate", "mask"]


@dataclass
class ISWeights:
    weights: torch.Tensor  # (B, T) float32, 0 at padding, detached
    ratio_mean: torch.Tensor  # () mean ρ over valid tokens (sequence level: over replies)
    ratio_max: torch.Tensor  # () largest ρ
    clipped_fraction: torch.Tensor  # () share of valid tokens (replies) truncated or masked
    max_abs_logprob_diff: torch.Tensor  # () max |old − μ| over valid tokens


def importance_weights(
    old_logprobs: torch.Tensor,
    sampling_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    level: ISLevel,
    mode: ISMode,
    clip_min: float = 0.0,
    clip_max: float = 2.0,
) -> ISWeights:
    """The (B, T) importance weights and their statistics (module docstring)."""
    mask = mask.bool()
    zero = torch.zeros((), dtype=torch.float32, device=mask.device)
    diff = torch.where(mask, old_logprobs.float() - sampling_logprobs.float(), zero).detach()
    if level == "token":
        ratio = torch.exp(diff)
    else:  # one ratio per reply, on each of its tokens
        ratio = torch.exp(diff.sum(dim=1, keepdim=True)).expand_as(diff)
    if mode == "truncate":
        clipped = ratio > clip_max
        kept = torch.clamp(ratio, max=clip_max)
    else:
        clipped = (ratio < clip_min) | (ratio > clip_max)
        kept = torch.where(clipped, zero, ratio)
    # statistics over the units weighted: valid tokens, or replies (read at their column 0)
    units = mask
    if level == "sequence":
        units = torch.zeros_like(mask)
        units[:, :1] = mask.any(dim=1, keepdim=True)
    n = max(int(units.sum()), 1)
    return ISWeights(
        weights=torch.where(mask, kept, zero),
        ratio_mean=ratio[units].sum() / n,
        ratio_max=ratio[units].max() if bool(units.any()) else zero,
        clipped_fraction=clipped[units].float().sum() / n,
        max_abs_logprob_diff=diff.abs().max() if diff.numel() else zero,
    )
