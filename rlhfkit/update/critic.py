"""The critic step (PPO): one optimiser step of the clipped value loss on a mini-batch.

Values are read where each response token is chosen (column P + t − 1), as the rollout's
`old_values` were; the loss is `core.value_loss` (½·max((V − R)², (V_old + clip(V − V_old, ±c)
− R)²), OpenAI baselines ppo2, MOSS-RLHF PPO-Max), reduced with the step's global normaliser;
accumulation, clipping and NaN/inf handling are `engine.accumulate` / `engine.optimizer_step`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from rlhfkit.core import LossMode, value_loss
from rlhfkit.engine import accumulate, optimizer_step, wrapped_forward
from rlhfkit.rollout import Experience
from rlhfkit.update.config import UpdateLossMode
from rlhfkit.update.policy import split_rows, step_totals

__all__ = ["critic_step"]


def _values(
    critic: Any, input_ids: torch.Tensor, mask: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """V(s_t) at the columns where response tokens are chosen (P − 1 … T − 2)."""
    return critic.values(input_ids, mask, slice(prompt_len - 1, -1))


def _micro_loss(
    critic: Any,
    mb: Experience,
    returns: torch.Tensor,
    value_clip_eps: float | None,
    mode: LossMode,
    totals: dict[str, float],
    share: float,
    autocast: Callable[[], Any],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with autocast():
        values = wrapped_forward(critic, _values, mb.input_ids, mb.attention_mask, mb.prompt_len)
    out = value_loss(
        values.float(), mb.old_values, returns, mb.response_mask, value_clip_eps, mode, **totals
    )
    stats = {
        "loss/value": out.loss.detach(),
        "critic/value_clipfrac": out.clipfrac * share,
        "critic/value_error": out.value_error * share,
    }
    return out.loss, stats


def critic_step(
    acc: Any,
    critic: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    mb: Experience,
    returns: torch.Tensor,
    *,
    value_clip_eps: float | None,
    loss_mode: UpdateLossMode,
    grad_accum_steps: int,
    max_grad_norm: float | None,
    max_new_tokens: int,
    autocast: Callable[[], Any],
) -> dict[str, float]:
    """One critic optimiser step on `mb` with targets `returns` (B, R); returns its stats."""
    mode, totals = step_totals(acc, mb.response_mask, loss_mode, max_new_tokens)
    n = mb.input_ids.shape[0]
    losses = []
    for rows in split_rows(n, grad_accum_steps):
        m = mb.select(rows)
        ret = returns[rows][:, : m.response_mask.shape[1]]
        losses.append(
            functools.partial(
                _micro_loss, critic, m, ret, value_clip_eps, mode, totals, len(rows) / n, autocast
            )
        )
    stats = accumulate(acc, critic, losses)
    stats["critic/grad_norm"] = optimizer_step(acc, critic, optimizer, scheduler, max_grad_norm)
    return stats
