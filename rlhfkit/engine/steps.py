"""The one gradient-accumulation and optimiser-step path every trainer uses (SFT, RM, PPO, the
critic-free family, DPO).

    stats = accumulate(acc, model, [partial(loss_fn, mb) for mb in micro_batches])
    grad_norm = optimizer_step(acc, model, optimizer, scheduler, max_grad_norm)

Implementation details and their sources:

1. Each micro-batch's loss must already be divided by the *global* normaliser of the whole
   optimiser step (all micro-batches, all processes; `core.aggregate_loss` says how), so the
   summed gradients equal one big batch's. This module only sums: it never divides by the
   number of micro-batches (the gradient-accumulation bug of transformers < 4.46 and Dr. GRPO §3).
2. Under DDP the gradients are all-reduced once per optimiser step: every micro-batch but the last
   runs inside `accelerator.no_sync(model)` (a no-op on one process; PyTorch DDP `no_sync`).
3. Global gradient-norm clipping over all parameters with a gradient (PPO-Max; Accelerate's
   `clip_grad_norm_` handles FSDP / DeepSpeed sharding); the norm before clipping is returned and
   logged. With clipping off the norm is still computed: it is the NaN/inf detector.
4. NaN/inf: a non-finite loss (before its backward) or gradient norm (before the step) clears the
   gradients and raises `NonFiniteError`, the one exception type a training loop catches to skip
   the step or stop (DESIGN.md §5). The optimiser and scheduler have then not moved.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["LossThunk", "NonFiniteError", "accumulate", "grad_norm", "optimizer_step"]

# A micro-batch's loss, computed when called: (loss to backpropagate, detached statistics to sum).
LossThunk = Callable[[], tuple[torch.Tensor, dict[str, Any]]]


class NonFiniteError(RuntimeError):
    """A loss or gradient norm was NaN/inf; the gradients were cleared and nothing stepped."""


def accumulate(acc: Any, model: torch.nn.Module, losses: Sequence[LossThunk]) -> dict[str, float]:
    """Backward every micro-batch loss of one optimiser step; return the sum of their stats.

    `losses` are called in order; each returns (loss, stats). DDP gradients are synchronised only
    on the last one. Raises `NonFiniteError` (gradients cleared) on a non-finite loss.
    """
    sums: dict[str, float] = {}
    for k, thunk in enumerate(losses):
        sync = k == len(losses) - 1
        with contextlib.nullcontext() if sync else acc.no_sync(model):
            loss, stats = thunk()
            if not bool(torch.isfinite(loss.detach()).all()):
                model.zero_grad(set_to_none=True)
                raise NonFiniteError(f"non-finite loss in micro-batch {k + 1}/{len(losses)}")
            acc.backward(loss)
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def grad_norm(acc: Any, model: torch.nn.Module, max_norm: float | None) -> float:
    """Global gradient norm before clipping; clips in place to `max_norm` unless it is None."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        norms = torch.stack([p.grad.detach().float().norm() for p in params])
        return float(torch.linalg.vector_norm(norms))
    return float(acc.clip_grad_norm_(params, max_norm))


def optimizer_step(
    acc: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    max_norm: float | None,
) -> float:
    """Clip, step the optimiser and the schedule, clear the gradients; return the norm before
    clipping. Raises `NonFiniteError` (gradients cleared, nothing stepped) on a NaN/inf norm."""
    norm = grad_norm(acc, model, max_norm)
    if not math.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(f"non-finite gradient norm ({norm})")
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm
