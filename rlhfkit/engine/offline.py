"""The loop every offline trainer (SFT, reward model, DPO, KTO) runs over its planned optimiser
steps, around its own batches, loss and metrics:

    loop = OfflineLoop(engine, model, optimizer, scheduler, cfg=cfg, ...)
    for step in loop.steps():
        out = loop.step(step, losses)        # accumulate + one optimiser step (or skipped)
        loop.rate.add(tokens)
        if loop.logs(step): ...log the trainer's metrics...
        loop.end_step(step)                  # evaluation, checkpoint
    model_dir = loop.finish(metrics, save)   # final evaluation, the model folder

A NaN/inf loss or gradient skips the step (weights and optimiser unchanged, counted and said
on the console); evaluation and checkpoints are left out of the tokens/s window (`TokenRate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlhfkit.engine.metrics import TokenRate
from rlhfkit.engine.steps import LossThunk, NonFiniteError, accumulate, optimizer_step

if TYPE_CHECKING:
    from rlhfkit.engine.engine import Engine

__all__ = ["OfflineLoop", "StepOutcome", "resumed_step"]


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


@dataclass
class OfflineLoop:
    """The steps `start + 1 … last` of an offline trainer's plan (`cfg`: its config, read for
    `optim.max_grad_norm`, `log_every`, `eval_every`; `name` heads the progress bar and the
    console lines; `evaluate()`: held-out metrics, None without validation data)."""

    engine: Engine
    model: torch.nn.Module  # prepared (inside the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    cfg: Any
    name: str
    last: int  # the plan's optimiser steps
    stat_keys: Sequence[str]  # the keys of the micro-batch stats (NaN in a skipped step)
    evaluate: Callable[[], dict[str, float]] | None = None
    start: int = 0  # the last step of the checkpoint resumed from (0: a fresh run)
    skipped: int = 0  # optimiser steps skipped for a NaN/inf loss or gradient
    rate: TokenRate = field(default_factory=TokenRate)  # training tokens/s

    def steps(self) -> Iterator[int]:
        """The steps still to run, with progress."""
        todo = range(self.start + 1, self.last + 1)
        return self.engine.progress(todo, total=self.last - self.start, desc=self.name)

    def step(self, step: int, losses: Sequence[LossThunk]) -> StepOutcome:
        """One optimiser step over this process's micro-batches (`accumulate`,
        `optimizer_step`). A NaN/inf loss or gradient skips it — weights and optimiser
        unchanged — with a console line and every stat NaN."""
        acc = self.engine.accelerator
        try:
            sums = accumulate(acc, self.model, losses)
            grad_norm = optimizer_step(
                acc, self.model, self.optimizer, self.scheduler, self.cfg.optim.max_grad_norm
            )
        except NonFiniteError as e:
            self.skipped += 1
            self.engine.print(f"[yellow]{self.name} step {step}: {e}; step skipped")
            return StepOutcome(dict.fromkeys(self.stat_keys, float("nan")), float("nan"), True)
        return StepOutcome(sums, grad_norm, False)

    def optim_metrics(self, out: StepOutcome, world: int) -> dict[str, float]:
        """The step's `optim/lr`, `optim/grad_norm`, `perf/*` (tokens of all `world`
        processes since the last log, `TokenRate.take`) and `nan/skipped_steps`."""
        return {
            "optim/lr": self.scheduler.get_last_lr()[0],
            "optim/grad_norm": out.grad_norm,
            **self.rate.take(world),
            "nan/skipped_steps": self.skipped,
        }

    def logs(self, step: int) -> bool:
        """Whether `step` writes a metrics line (every `log_every` steps and the last)."""
        return step % self.cfg.log_every == 0 or step == self.last

    def end_step(self, step: int) -> None:
        """After a step's metrics: the held-out evaluation every `eval_every` steps (not at
        the last step: `finish` evaluates then) and a checkpoint when the engine says so and
        at the last step, both outside the tokens/s window."""
        engine, every = self.engine, self.cfg.eval_every
        if self.evaluate is not None and every and step % every == 0 and step != self.last:
            with self.rate.paused():
                engine.log(self.evaluate(), step)
        if engine.should_save(step) or step == self.last:
            with self.rate.paused():
                engine.save(step, {"step": step})

    def finish(self, metrics: dict[str, Any], save: Callable[[Path], None]) -> Path:
        """The final evaluation (logged at the last step, merged into `metrics`), then
        `save(RUN/model)` on the main process while the others wait, then the engine closed.
        Returns RUN/model."""
        engine = self.engine
        if self.evaluate is not None:
            final = self.evaluate()
            engine.log(final, self.last)
            metrics.update(final)
        model_dir = engine.run.path / "model"
        engine.accelerator.wait_for_everyone()
        if engine.is_main:
            save(model_dir)
        engine.accelerator.wait_for_everyone()
        engine.close()
        return model_dir
