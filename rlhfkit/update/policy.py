"""The policy step every online trainer shares: one optimiser step on a mini-batch of experience.

    objective = build_objective(cfg)                  # once, at setup
    stats = policy_step(acc, policy, optimizer, scheduler, mb, advantages, objective, ...)

Implementation details and their sources:

1. The surrogate is picked once at setup from a dict (no `if` in the step): PPO-Clip with
   optional clip-higher (DAPO) and dual clip (Ye et al. 2020), PPO-Penalty, or the plain
   REINFORCE-style −A·ρ (`core.policy_gradient_loss`).
2. Log-probs and entropies come from one forward over the mini-batch (`rollout.response_logprobs`:
   LM head at response positions only), logits divided by the sampling temperature (TRL, OpenRLHF).
3. Terms added to the surrogate, each reduced with the same `aggregate_loss` mode and global
   normaliser: − `entropy_coef` · entropy; + `kl_loss_coef` · KL(π ‖ π_ref) (`core.kl_loss`, k3 by
   default, GRPO: Shao et al. 2024 eq. 3); + `ptx_coef` · NLL of a demonstration batch once per
   optimiser step (InstructGPT PPO-ptx). Every log-prob here comes from the hidden states,
   chunked over tokens (`core.head_logprobs`): no (tokens × vocabulary) tensor is held.
4. The normaliser is global (all micro-batches of the step, summed over processes and divided by
   the world size, `core.aggregate_loss` docstring), so 1 × 8 ≡ 8 × 1 accumulation (tested).
   `seq_mean_token_sum_norm` (Dr. GRPO, Liu et al. 2025): Σ token losses / (S · L_max).
5. Accumulation, `no_sync`, clipping and NaN/inf handling are `engine.accumulate` /
   `engine.optimizer_step` (raises `engine.NonFiniteError`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.core import (
    KLEstimator,
    LossMode,
    aggregate_loss,
    kl_loss,
    policy_gradient_loss,
    ppo_penalty_loss,
    ppo_policy_loss,
)
from rlhfkit.engine import accumulate, optimizer_step
from rlhfkit.models import position_ids_from_mask
from rlhfkit.rollout import Experience, next_token_logprobs, response_logprobs
from rlhfkit.update.config import OnlineConfig, UpdateLossMode

__all__ = [
    "PolicyObjective",
    "build_objective",
    "policy_step",
    "ptx_loss",
    "split_rows",
    "step_totals",
]


@dataclass(frozen=True)
class PolicyObjective:
    """What the policy minimises, fixed at setup."""

    surrogate: Callable[..., Any]  # (logprobs, old_logprobs, advantages, mask, mode=, **totals)
    loss_mode: UpdateLossMode
    temperature: float
    entropy_coef: float = 0.0
    kl_loss_coef: float = 0.0
    kl_loss_estimator: KLEstimator = "k3"
    ptx_coef: float = 0.0


def build_objective(cfg: OnlineConfig) -> PolicyObjective:
    surrogate = {
        "clip": functools.partial(
            ppo_policy_loss,
            clip_eps=cfg.clip_eps,
            clip_eps_high=cfg.clip_eps_high,
            clip_ratio_c=cfg.clip_ratio_c,
        ),
        "penalty": functools.partial(ppo_penalty_loss, kl_coef=cfg.penalty_coef),
        "pg": policy_gradient_loss,
    }[cfg.policy_loss]
    return PolicyObjective(
        surrogate=surrogate,
        loss_mode=cfg.loss_mode,
        temperature=cfg.rollout.temperature,
        entropy_coef=cfg.entropy_coef,
        kl_loss_coef=cfg.kl_loss_coef,
        kl_loss_estimator=cfg.kl_loss_estimator,
        ptx_coef=cfg.ptx_coef,
    )


def split_rows(n: int, parts: int) -> list[torch.Tensor]:
    """`parts` contiguous, nearly equal row blocks of 0 … n − 1 (empty ones dropped)."""
    return [idx for idx in torch.arange(n).tensor_split(parts) if len(idx)]


def step_totals(
    acc: Any, response_mask: torch.Tensor, mode: UpdateLossMode, max_new_tokens: int
) -> tuple[LossMode, dict[str, float]]:
    """The `aggregate_loss` mode and this process's share of the step's global normaliser.

    Token and sequence counts are summed over processes and divided by the world size W (DDP
    averages gradients over W), so every micro-batch's loss is Σ / N_global (core docstring).
    """
    counts = torch.tensor(
        [float(response_mask.sum()), float(response_mask.shape[0])],
        device=response_mask.device,
    )
    if acc.num_processes > 1:
        counts = acc.reduce(counts, "sum")
    world = acc.num_processes
    num_tokens, num_seqs = float(counts[0]) / world, float(counts[1]) / world
    if mode == "seq_mean_token_sum_norm":
        return "token_mean", {"num_tokens": num_seqs * max_new_tokens, "num_seqs": num_seqs}
    return mode, {"num_tokens": num_tokens, "num_seqs": num_seqs}


def ptx_loss(policy: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean NLL of the demonstration responses (InstructGPT PPO-ptx), from the hidden
    states without the (B, T, V) logits (`rollout.next_token_logprobs`)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logprobs = next_token_logprobs(policy, ids, mask, position_ids_from_mask(mask))
    return aggregate_loss(-logprobs, batch["response_mask"][:, 1:], "token_mean")


def _micro_loss(
    policy: torch.nn.Module,
    mb: Experience,
    advantages: torch.Tensor,
    objective: PolicyObjective,
    mode: LossMode,
    totals: dict[str, float],
    share: float,
    autocast: Callable[[], Any],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    mask = mb.response_mask
    with autocast():
        logprobs, entropy = response_logprobs(
            policy, mb.input_ids, mb.attention_mask, mb.prompt_len, objective.temperature, True
        )
    out = objective.surrogate(logprobs, mb.old_logprobs, advantages, mask, mode=mode, **totals)
    entropy_term = aggregate_loss(entropy, mask, mode, **totals)
    loss = out.loss
    if objective.entropy_coef:
        loss = loss - objective.entropy_coef * entropy_term
    stats = {
        "loss/policy": out.loss.detach(),
        "policy/entropy": entropy_term.detach(),
        "policy/clipfrac": out.clipfrac * share,
        "policy/clipfrac_low": out.clipfrac_low * share,
        "policy/clipfrac_high": out.clipfrac_high * share,
        "policy/dual_clipfrac": out.dual_clipfrac * share,
        "policy/approx_kl": out.approx_kl * share,
    }
    if objective.kl_loss_coef:
        per_token = kl_loss(logprobs, mb.ref_logprobs, mask, objective.kl_loss_estimator)
        kl_term = aggregate_loss(per_token, mask, mode, **totals)
        loss = loss + objective.kl_loss_coef * kl_term
        stats["loss/kl"] = kl_term.detach()
    return loss, stats


def _ptx_micro_loss(
    policy: torch.nn.Module, batch: dict[str, torch.Tensor], coef: float, autocast: Callable
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with autocast():
        ptx = ptx_loss(policy, batch)
    return coef * ptx, {"loss/ptx": ptx.detach()}


def policy_step(
    acc: Any,
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    mb: Experience,
    advantages: torch.Tensor,
    objective: PolicyObjective,
    *,
    grad_accum_steps: int,
    max_grad_norm: float | None,
    max_new_tokens: int,
    ptx_batch: dict[str, torch.Tensor] | None = None,
    autocast: Callable[[], Any],
) -> dict[str, float]:
    """One policy optimiser step on `mb` (B rows) with `advantages` (B, R), over
    `grad_accum_steps` micro-batches; returns the step's statistics. Raises
    `engine.NonFiniteError` (nothing stepped) on a NaN/inf loss or gradient norm."""
    mode, totals = step_totals(acc, mb.response_mask, objective.loss_mode, max_new_tokens)
    n = mb.input_ids.shape[0]
    if objective.kl_loss_coef and mb.ref_logprobs is None:
        raise ValueError("kl_loss_coef > 0 needs reference log-probs in the experience")
    losses = []
    for rows in split_rows(n, grad_accum_steps):
        m = mb.select(rows)
        adv = advantages[rows][:, : m.response_mask.shape[1]]
        losses.append(
            functools.partial(
                _micro_loss, policy, m, adv, objective, mode, totals, len(rows) / n, autocast
            )
        )
    if ptx_batch is not None:  # once per optimiser step, on its own demonstrations
        losses.append(
            functools.partial(_ptx_micro_loss, policy, ptx_batch, objective.ptx_coef, autocast)
        )
    stats = accumulate(acc, policy, losses)
    stats["policy/grad_norm"] = optimizer_step(acc, policy, optimizer, scheduler, max_grad_norm)
    return stats
