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
   DDP averages the W processes' gradients, so a loss normalised by the global count N is
   computed as Σ_local / (N / W) (`core.aggregate_loss`); for W = 2 the ×2 / 2 is exact in
   binary floating point and the all-reduced sum of two gradients equals the one-process
   accumulation bit for bit.
3. A forward that needs gradients must run through the distributed wrapper (DDP prepares its
   gradient all-reduce in `forward`; FSDP gathers the shards in its forward hooks), even when the
   trainer computes only part of the model (`response_logprobs` applies the LM head at response
   columns only; the critic reads `values`): `wrapped_forward` runs such a function as the
   wrapper's forward. Forwards without gradients (sampling, scoring) use the inner model
   (`unwrap`): its number of calls differs between processes, and DDP's forward may broadcast
   buffers, a collective every process must join.
4. The statistics of a step are summed over its micro-batches, then averaged over processes
   (each process's sum is already scaled by W through the global normaliser), so what is logged
   is the same number a one-process run logs.
5. Global gradient-norm clipping over all parameters with a gradient (PPO-Max; Accelerate's
   `clip_grad_norm_` handles FSDP / DeepSpeed sharding); the norm before clipping is returned and
   logged. With clipping off the norm is still computed: it is the NaN/inf detector.
6. NaN/inf: a non-finite loss (before its backward) or gradient norm (before the step) clears the
   gradients and raises `NonFiniteError`, the one exception type a training loop catches to skip
   the step or stop (docs/architecture.md, "Reliability"). The optimiser and scheduler have then
   not moved. With several processes a loss is checked after the step's backward passes (a
   process that stopped early would leave the others waiting in the all-reduce), and the verdict
   is shared, so every process raises together.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

__all__ = [
    "LossThunk",
    "NonFiniteError",
    "accumulate",
    "grad_norm",
    "gathered",
    "optimizer_step",
    "unwrap",
    "wrapped_forward",
]

T = TypeVar("T")

# A micro-batch's loss, computed when called: (loss to backpropagate, detached statistics to sum).
LossThunk = Callable[[], tuple[torch.Tensor, dict[str, Any]]]


class NonFiniteError(RuntimeError):
    """A loss or gradient norm was NaN/inf; the gradients were cleared and nothing stepped."""


def unwrap(model: Any) -> Any:
    """The model inside a distributed wrapper (DDP, DeepSpeed's engine; `model` itself if none)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=True)


def _is_fsdp2(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def wrapped_forward(model: Any, fn: Callable[..., T], *args: Any) -> T:
    """`fn(inner, *args)`, run as the forward of `model`'s distributed wrapper, so the wrapper's
    pre/post-forward work happens: DDP (when gradients are on) prepares the gradient all-reduce;
    FSDP2 (`fully_shard` puts its hooks on the module itself) gathers the root's shards.
    Without a wrapper, or DDP without gradients: plainly `fn(inner, *args)`."""
    inner = unwrap(model)
    if not _is_fsdp2(inner) and (inner is model or not torch.is_grad_enabled()):
        return fn(inner, *args)
    saved = inner.__dict__.get("forward")  # Accelerate may have set an instance forward
    inner.forward = lambda *a: fn(inner, *a)
    try:
        return model(*args)
    finally:
        if saved is None:
            del inner.forward
        else:
            inner.forward = saved


@contextlib.contextmanager
def gathered(model: Any) -> Iterator[Any]:
    """The inner model with its root parameters whole for several calls that bypass its
    forward (sampling step by step through the backbone): FSDP2 `unshard()` / `reshard()`;
    sub-modules sharded on their own gather in their hooks. Anything else: as it is."""
    inner = unwrap(model)
    if not _is_fsdp2(inner):
        yield inner
        return
    inner.unshard()
    try:
        yield inner
    finally:
        inner.reshard()


def accumulate(acc: Any, model: torch.nn.Module, losses: Sequence[LossThunk]) -> dict[str, float]:
    """Backward every micro-batch loss of one optimiser step; return the sum of their stats,
    averaged over processes.

    `losses` are called in order; each returns (loss, stats). DDP gradients are synchronised only
    on the last one. Raises `NonFiniteError` (gradients cleared) on a non-finite loss.
    """
    sums: dict[str, float] = {}
    world = acc.num_processes
    bad = None
    for k, thunk in enumerate(losses):
        sync = k == len(losses) - 1
        with contextlib.nullcontext() if sync else acc.no_sync(model):
            loss, stats = thunk()
            if bad is None and not bool(torch.isfinite(loss.detach()).all()):
                bad = f"non-finite loss in micro-batch {k + 1}/{len(losses)}"
                if world == 1:
                    model.zero_grad(set_to_none=True)
                    raise NonFiniteError(bad)
            acc.backward(loss)
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    if world > 1:
        keys = sorted(sums)
        packed = torch.tensor([sums[k] for k in keys] + [float(bad is not None)], device=acc.device)
        packed = acc.reduce(packed, "sum")
        sums = {k: float(v) / world for k, v in zip(keys, packed[:-1].tolist(), strict=True)}
        if float(packed[-1]) > 0:
            model.zero_grad(set_to_none=True)
            raise NonFiniteError(bad or "non-finite loss on another process")
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
