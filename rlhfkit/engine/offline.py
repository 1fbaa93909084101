"""The pieces of the loop every offline trainer (SFT, reward model, DPO, KTO) runs over its
planned optimiser steps, around its own batches, loss and metrics:

    start = resumed_step(engine)
    for step in engine.progress(range(start + 1, last + 1), ...):
        out = step_or_skip(engine, model, losses, ...)   # accumulate + one optimiser step
        ...log the trainer's metrics every `log_every` steps...
        evaluate_and_save(engine, step, last=last, ...)  # evaluation, checkpoint
    model_dir = finish(engine, last=last, ...)           # final evaluation, the model folder

A NaN/inf loss or gradient skips the step (weights and optimiser unchanged, counted and said
on the console); evaluation and checkpoints are left out of the tokens/s window (`TokenRate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlhfkit.engine.metrics import TokenRate
from rlhfkit.engine.steps import LossThunk, NonFiniteError, accumulate, optimizer_step

if TYPE_CHECKING:
    from rlhfkit.engine.engine import Engine

__all__ = ["StepOutcome", "evaluate_and_save", "finish", "resumed_step", "step_or_skip"]


def resumed_step(engine: Engine) -> int:
    """The last step of the checkpoint the engine resumed from (models, optimiser, scheduler
    and RNG states restored), 0 for a fresh run."""
    state = engine.resume()
    return state["step"] if state else 0


@dataclass
class StepOutcome:
    sums: dict[str, float]  # the step's summed statistics (`accumulate`); NaN when skipped
    grad_norm: float  # before clipping; NaN when skipped
    skipped: bool  # a NaN/inf loss or gradient: nothing moved


def step_or_skip(
    engine: Engine,
    model: torch.nn.Module,
    losses: Sequence[LossThunk],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    max_grad_norm: float | None,
    stat_keys: Sequence[str],
    what: str,
) -> StepOutcome:
    """One optimiser step over this process's micro-batches (`accumulate`, `optimizer_step`).
    A NaN/inf loss or gradient skips it — weights and optimiser unchanged — with a console line
    `[what]: [the problem]; step skipped`, and every one of `stat_keys` NaN."""
    acc = engine.accelerator
    try:
        sums = accumulate(acc, model, losses)
        grad_norm = optimizer_step(acc, model, optimizer, scheduler, max_grad_norm)
    except NonFiniteError as e:
        engine.print(f"[yellow]{what}: {e}; step skipped")
        return StepOutcome(dict.fromkeys(stat_keys, float("nan")), float("nan"), True)
    return StepOutcome(sums, grad_norm, False)


def evaluate_and_save(
    engine: Engine,
    step: int,
    *,
    last: int,
    rate: TokenRate,
    eval_every: int,
    evaluate: Callable[[], dict[str, float]] | None,
) -> None:
    """After a step's metrics: the held-out evaluation every `eval_every` steps (not at the
    last step: `finish` evaluates then; `evaluate` None: no validation data) and a checkpoint
    when the engine says so and at the last step, both outside the tokens/s window."""
    if evaluate is not None and eval_every and step % eval_every == 0 and step != last:
        with rate.paused():
            engine.log(evaluate(), step)
    if engine.should_save(step) or step == last:
        with rate.paused():
            engine.save(step, {"step": step})


def finish(
    engine: Engine,
    *,
    last: int,
    metrics: dict[str, Any],
    evaluate: Callable[[], dict[str, float]] | None,
    save: Callable[[Path], None],
) -> Path:
    """The final evaluation (logged at step `last`, merged into `metrics`), then `save(RUN/model)`
    on the main process while the others wait, then the engine closed. Returns RUN/model."""
    if evaluate is not None:
        final = evaluate()
        engine.log(final, last)
        metrics.update(final)
    model_dir = engine.run.path / "model"
    engine.accelerator.wait_for_everyone()
    if engine.is_main:
        save(model_dir)
    engine.accelerator.wait_for_everyone()
    engine.close()
    return model_dir
