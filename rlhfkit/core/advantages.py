"""Advantage estimators: GAE, discounted returns, group-relative (GRPO) and leave-one-out (RLOO).

Implementation details and their sources:

1. GAE (Schulman et al. 2016, "High-dimensional continuous control using generalized advantage
   estimation", eq. 16): δ_t = r_t + γ·V_{t+1} − V_t, A_t = Σ_l (γλ)^l δ_{t+l}, computed by the
   backward recursion A_t = δ_t + γλ·A_{t+1} (CleanRL ppo.py, TRL `PPOTrainer`, OpenRLHF
   `get_advantages_and_returns`). Returns R_t = A_t + V_t are the critic's targets.
2. Each row's valid positions form one sequence: masked positions are skipped, not treated as
   steps. So V_{t+1} is the value at the *next valid* position of the row, and 0 after the last
   valid one (the episode ends there: the score was put on it by `shape_rewards`). Left padding,
   right padding and holes all mean the same thing, and NaN at masked positions never reaches
   a valid output (the recursion selects with `torch.where`). An episode that is cut off rather
   than finished must fold its bootstrap value into its last reward (r_T + γ·V(s_{T+1})), as
   examples/cartpole_ppo.py does.
3. GRPO group advantages (Shao et al. 2024, DeepSeekMath §4.1): A_i = (s_i − mean_g)/(std_g + eps)
   over the G samples of the same prompt, std unbiased as in TRL `GRPOTrainer` (eps 1e-4 there).
   Dr. GRPO (Liu et al. 2025) drops the std division: `normalize_std=False`.
4. RLOO (Ahmadian et al. 2024, "Back to basics"): A_i = s_i − mean_{j≠i} s_j, i.e.
   G/(G−1)·(s_i − mean_g); TRL `RLOOTrainer` computes the same baseline.
5. DAPO overlong reward shaping (Yu et al. 2025 eq. 13): a soft length penalty over the last
   `cache` tokens of the length budget, linear from 0 to −1.
"""

from __future__ import annotations

import torch

__all__ = [
    "discounted_returns",
    "gae",
    "group_advantages",
    "group_baseline",
    "overlong_penalty",
    "rloo_advantages",
]


def _check_pair(name: str, a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if a.dim() != 2 or a.shape != mask.shape:
        raise ValueError(
            f"{name}: expected (B, T) tensors of one shape, got {tuple(a.shape)} "
            f"and mask {tuple(mask.shape)}"
        )
    return mask if mask.dtype == torch.bool else mask != 0


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over the valid tokens of each row.

    Over the valid positions t_1 < … < t_n of a row (V after the last is 0):
    δ_t = r_t + γ·V_next(t) − V_t,  A_t = δ_t + γλ·A_next(t),  R_t = A_t + V_t.
    Shapes: `rewards`, `values`, `mask` (B, T), True = valid → (advantages, returns), both (B, T),
    0 at masked positions. No gradient flows (the inputs are detached). References: Schulman et
    al. 2016 eq. 16; CleanRL ppo.py; TRL `PPOTrainer` (right padding only there).
    """
    mask = _check_pair("gae", rewards, mask)
    _check_pair("gae", values, mask)
    rewards, values = rewards.detach(), values.detach()
    values = values.to(rewards.dtype)
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    # delta/advantage at a masked column may be NaN (padding garbage); every write below selects
    # with torch.where, so it is never stored or carried to a valid column.
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        valid = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        # a masked column carries the state of the next valid token through unchanged.
        next_advantage = torch.where(valid, advantage, next_advantage)
        next_value = torch.where(valid, values[:, t], next_value)
        advantages[:, t] = torch.where(valid, advantage, zero)
    returns = torch.where(mask, advantages + values, zero)
    return advantages, returns


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go over the valid tokens of each row: G_t = r_t + γ·G_next(t), 0 after the last.

    Shapes: `rewards`, `mask` (B, T), True = valid → (B, T), 0 at masked positions. Equals the
    returns of `gae` with λ = 1 and V = 0. Used by REINFORCE-style trainers (REINFORCE++,
    Hu 2025; OpenRLHF `get_cumulative_returns`).
    """
    mask = _check_pair("discounted_returns", rewards, mask)
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    rewards = torch.where(mask, rewards.detach(), zero)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    out = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        valid = mask[:, t]
        running = torch.where(valid, rewards[:, t] + gamma * running, running)
        out[:, t] = torch.where(valid, running, zero)
    return out


def _grouped(name: str, scores: torch.Tensor, group_size: int) -> torch.Tensor:
    if scores.dim() != 1 or group_size < 2 or scores.numel() % group_size != 0:
        raise ValueError(
            f"{name}: scores must be (N,) with N a multiple of group_size >= 2; got "
            f"{tuple(scores.shape)} and group_size={group_size}"
        )
    return scores.view(-1, group_size)


def group_advantages(
    scores: torch.Tensor, group_size: int, normalize_std: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """GRPO advantages: A_i = (s_i − mean_g(s)) / (std_g(s) + eps), or s_i − mean_g when not normalising.

    Shapes: `scores` (N,) with the G = `group_size` samples of each prompt contiguous
    (N = prompts·G) → (N,). std is the unbiased sample std of the group. Reference: DeepSeekMath
    §4.1.2; TRL `GRPOTrainer` (`std_rewards`, eps 1e-4).
    """
    grouped = _grouped("group_advantages", scores, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO advantages: A_i = s_i − (1/(G−1))·Σ_{j≠i} s_j within each group of G samples.

    Shapes: `scores` (N,), groups contiguous → (N,). Reference: Ahmadian et al. 2024 eq. 9;
    TRL `RLOOTrainer` baseline `(sum - s) / (k - 1)`.
    """
    grouped = _grouped("rloo_advantages", scores, group_size)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).reshape(-1)


def group_baseline(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """s_i − mean of its group (G contiguous samples per prompt): the REINFORCE++-baseline
    centring (Hu 2025 §3; OpenRLHF `reinforce_baseline`) and Dr. GRPO's advantage. (N,) → (N,)."""
    grouped = _grouped("group_baseline", scores, group_size)
    return (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)


def overlong_penalty(lengths: torch.Tensor, max_length: int, cache: int) -> torch.Tensor:
    """DAPO soft overlong punishment: 0 for |y| ≤ L − C, ((L − C) − |y|)/C for L − C < |y| ≤ L,
    −1 beyond, with L = `max_length`, C = `cache` (Yu et al. 2025 eq. 13). (N,) → (N,) float."""
    if not 0 < cache <= max_length:
        raise ValueError(
            f"overlong_penalty: need 0 < cache <= max_length, got {cache}, {max_length}"
        )
    lengths = lengths.float()
    soft = ((max_length - cache) - lengths) / cache
    return torch.where(
        lengths <= max_length - cache,
        torch.zeros_like(lengths),
        torch.where(lengths <= max_length, soft, torch.full_like(lengths, -1.0)),
    )
