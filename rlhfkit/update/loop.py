"""The steps every online loop shares around its own math: the mini-batch epochs of step 4,
the rollout check after step 1, the timing split, step 6 (collapse warnings, samples,
evaluation, metrics, checkpoint) and the end of the run (final evaluation, last checkpoint,
the policy saved)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from rlhfkit.engine import Engine, NonFiniteError, latest_checkpoint
from rlhfkit.models import save_policy
from rlhfkit.rollout import OnlineModels, RewardError
from rlhfkit.update.config import OnlineConfig
from rlhfkit.update.data import OnlineData
from rlhfkit.update.sampling import push_policy
from rlhfkit.update.state import OnlineResult, OnlineState, RunStatus

__all__ = [
    "OnlineLoop",
    "OnlineRun",
    "RolloutVerdict",
    "evaluate_held_out",
    "finite",
    "minibatch_epochs",
    "timing_metrics",
]

# what the loop does with a rollout: train on it, drop it (counted), or stop the run
RolloutVerdict = Literal["ok", "skip", "stop"]


def timing_metrics(
    batch: Any, *, t0: float, t_update: float, t_train: float, skipped: int
) -> dict[str, float]:
    """Throughput and the time split of one iteration (`batch` is the rollout's `Collected`)."""
    return {
        "perf/tokens_per_s": int(batch.experience.response_mask.sum()) / (t_train - t0),
        "time/generation": batch.seconds_generation,
        "time/scoring": t_update - t0 - batch.seconds_generation,
        "time/training": t_train - t_update,
        "nan/skipped_steps": skipped,
    }


def minibatch_epochs(
    n_rows: int,
    *,
    epochs: int,
    mini_batch_size: int,
    generator: torch.Generator,
    step: Callable[[torch.Tensor], dict[str, float]],
    on_nan: str,
    shard: tuple[int, int] = (0, 1),
) -> tuple[dict[str, float], int]:
    """`epochs` passes over the rollout's rows, each a fresh permutation split into
    mini-batches; `step(rows) -> stats` runs one optimiser step (or two, with a critic) on this
    process's contiguous share of each mini-batch (`shard` = (rank, world); every process
    draws the same permutation, so the shares of a mini-batch are its 1/world parts).
    Returns the mean of each statistic and how many steps NaN/inf made skip; with
    `on_nan="stop"` the `NonFiniteError` propagates (the caller stops the run)."""
    rank, world = shard
    stats: dict[str, list[float]] = {}
    skipped = 0
    for _ in range(epochs):
        perm = torch.randperm(n_rows, generator=generator)
        for rows in perm.split(mini_batch_size):
            try:
                result = step(rows.tensor_split(world)[rank])
            except NonFiniteError:
                if on_nan == "stop":
                    raise
                skipped += 1
                continue
            for k, v in result.items():
                stats.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in stats.items()}, skipped


def finite(*tensors: torch.Tensor | None) -> bool:
    """Whether every given tensor (None: absent, fine) holds only finite values."""
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


class OnlineRun(Protocol):
    """What every online trainer's run holds (`PPORun`, `PGRun`, `OnlineDPORun`)."""

    cfg: OnlineConfig
    engine: Engine
    data: OnlineData
    models: OnlineModels
    state: OnlineState
    judges: dict[str, Any]


def evaluate_held_out(
    run: OnlineRun,
    iteration: int,
    *,
    models: OnlineModels | None = None,
    env: Any = None,
) -> dict[str, float]:
    """`eval/*` of `models` (default: the run's) on the held-out prompts (the same draws at every evaluation: the generator is
    seeded from the run seed), with the replies written to RUN/samples/eval_NNNNNN.jsonl. Under
    `accelerate launch` every process evaluates all the held-out prompts (the same numbers
    everywhere; not sharded) and the main process writes them. With an environment (`env`, an
    `env.EnvRollout`): one episode per prompt, `eval/env/*`, transcripts written."""
    from rlhfkit.env import evaluate_env
    from rlhfkit.rollout import evaluate_online

    engine, cfg, data, judges = run.engine, run.cfg, run.data, run.judges
    models = models or run.models
    if data.eval_prompts is None:
        return {}
    seed = cfg.engine.seed + 10_000
    if env is not None:
        metrics, rows = evaluate_env(
            env, models, data.eval_prompts, cfg.rollout, seed, engine.autocast
        )
    else:
        metrics, rows = evaluate_online(
            models, data.eval_prompts, cfg.rollout, seed, judges, engine.autocast
        )
        for failure in dict.fromkeys(models.reward.take_failures()):
            engine.print(f"[yellow]evaluation at iteration {iteration}: {failure} (eval score NaN)")
    if engine.is_main:
        engine.run.write_samples(f"eval_{iteration:06d}", rows)
    return metrics


def _gathered(engine: Engine, items: list[str]) -> list[str]:
    """`items` of every process, in process order (a process whose reward function failed
    is the only one that knows why; all must take the same decision)."""
    if engine.num_processes == 1:
        return items
    from accelerate.utils import gather_object

    return list(gather_object(items))


def _nan_report(exp: Any) -> str:
    """Which scores (and log-probs, values) are NaN/inf, counted, in words."""
    n = exp.scores.numel()
    parts = [
        f"{int((~torch.isfinite(v)).sum())} of {n} scores from {k!r}"
        for k, v in exp.score_parts.items()
        if not bool(torch.isfinite(v).all())
    ]
    if not parts and not bool(torch.isfinite(exp.scores).all()):  # inf − inf in the sum
        parts = [f"{int((~torch.isfinite(exp.scores)).sum())} of {n} scores"]
    for name in ("old_logprobs", "ref_logprobs", "old_values"):
        t = getattr(exp, name)
        if t is not None and not bool(torch.isfinite(t).all()):
            parts.append(f"{name} in {int((~torch.isfinite(t)).any(1).sum())} replies")
    return "NaN/inf: " + ", ".join(parts)


@dataclass
class OnlineLoop:
    """The bookkeeping every online trainer's loop shares around its own steps: where the run
    starts (a resumed run goes on from its checkpoint's iteration), the evaluation before
    training, `stop_after`, the rollout check after step 1, a NaN/inf stop in the update, step 6
    (`end_iteration`) and the end of the run (`end`). The trainer keeps its numbered steps:

        loop = OnlineLoop.of(run, total_iters=..., evaluate=lambda i: evaluate(run, i))
        metrics, sync = loop.begin()
        for iteration in loop.iterations(desc="ppo"):
            ...                                   # 1.-5.
            loop.end_iteration(iteration, metrics=metrics, batch=batch)
        return loop.end(metrics)
    """

    engine: Engine
    state: OnlineState
    cfg: OnlineConfig
    data: OnlineData
    models: OnlineModels
    total_iters: int
    evaluate: Callable[[int], dict[str, float]]  # iteration → eval/* ({}: no held-out prompts)
    start: int = 0  # the iteration the run starts after (set by `begin`)
    status: RunStatus = "completed"

    @classmethod
    def of(
        cls, run: OnlineRun, *, total_iters: int, evaluate: Callable[[int], dict[str, float]]
    ) -> OnlineLoop:
        """The loop of an online trainer's run (`setup`'s result)."""
        return cls(run.engine, run.state, run.cfg, run.data, run.models, total_iters, evaluate)

    def begin(self) -> tuple[dict[str, float], dict[str, float]]:
        """(metrics, weight-sync stats): the rollout engine brought to the policy as it is
        (`push_policy`), then on a fresh run with held-out prompts `eval/*` at iteration 0."""
        self.start = self.state.iteration
        sync = push_policy(self.models, self.engine.accelerator, self.start)
        metrics: dict[str, float] = {}
        if self.start == 0 and self.data.eval_prompts is not None:
            metrics.update(self.evaluate(0))
            self.engine.log(metrics, 0)
        return metrics, sync

    def iterations(self, desc: str) -> Iterator[int]:
        """The iterations still to run, with progress; past `stop_after` the run ends with
        status "stopped"."""
        todo = range(self.start + 1, self.total_iters + 1)
        for iteration in self.engine.progress(todo, desc=desc):
            if self.cfg.stop_after is not None and iteration > self.cfg.stop_after:
                self.status = "stopped"
                return
            yield iteration

    def check_rollout(
        self,
        iteration: int,
        *,
        tensors: tuple[torch.Tensor | None, ...],
        exp: Any = None,
        reward: Any = None,
    ) -> RolloutVerdict:
        """ "ok" when every one of `tensors` (the rollout's scores, log-probs, values: those the
        trainer uses; None: absent) is finite. Otherwise the rollout is bad: NaN/inf in them
        (`exp`, its `Experience`, names which), or a reward function that failed on it
        (`reward.failures`, gathered from every process).

        A failed reward function follows `on_reward_error`: "stop" closes the engine and raises a
        `RewardError` naming the function, the iteration and the problem (the last checkpoint on
        disk is the last good state; `rlhfkit` prints it as one line, exit 2), "skip" drops the
        batch, counted in `reward/failed_batches`. Other NaN/inf follow `on_nan`: "stop" (returned;
        the caller ends the run, keeping the last checkpoint) or "skip" (the batch is dropped,
        counted in `nan/skipped_batches`). One bad score drops the whole batch, not only its group:
        the batch's statistics (whitening, KL control, running moments) are not computed on a part.
        Either way the console says what was found, with counts, and the verdict is "stop" or
        "skip"."""
        if finite(*tensors):
            return "ok"
        engine, state, cfg = self.engine, self.state, self.cfg
        failures = list(dict.fromkeys(_gathered(engine, reward.take_failures() if reward else [])))
        what = _nan_report(exp) if exp is not None else "NaN/inf in the rollout"
        if failures:
            why = "; ".join(failures)
            if cfg.on_reward_error == "stop":
                last = latest_checkpoint(engine.run.checkpoints)
                kept = (
                    f"its last checkpoint {last} is kept" if last else "no checkpoint was written"
                )
                engine.close()
                raise RewardError(
                    f"iteration {iteration}: {why}; the run stopped ({kept}; "
                    "on_reward_error: skip would skip such batches)"
                )
            key, metric = "reward function failures", "reward/failed_batches"
        else:
            why = what
            if cfg.on_nan == "stop":
                engine.print(
                    f"[red]iteration {iteration}: {why}: stopping (on_nan: stop); "
                    "the last checkpoint is kept"
                )
                self.status = "stopped_on_nan"
                return "stop"
            key, metric = "NaN/inf", "nan/skipped_batches"
        state.skipped[key] = state.skipped.get(key, 0) + 1
        engine.print(
            f"[yellow]iteration {iteration}: {why}: batch skipped "
            f"({state.skipped[key]} skipped for {key} so far; metric {metric})"
        )
        engine.log({metric: 1}, iteration)
        state.iteration = iteration
        return "skip"

    def stop_on_nan(self) -> None:
        """A NaN/inf loss or gradient in the update with `on_nan: stop` (`NonFiniteError`): the
        run ends with status "stopped_on_nan", the last checkpoint kept."""
        self.status = "stopped_on_nan"
        self.engine.print(
            "[red]NaN/inf in a loss or gradient: stopping; the last checkpoint is kept"
        )

    def end_iteration(
        self, iteration: int, *, metrics: dict[str, float], batch: Any
    ) -> dict[str, float]:
        """Step 6 of every online loop: collapse warnings, sample file, periodic evaluation, metrics
        line and checkpoint. `batch` is this rollout's `Collected`; `self.evaluate(iteration)` returns
        `eval/*` metrics (or {} without held-out prompts). Returns the logged metrics."""
        for kind, warning in self.state.monitor.check_kinds(metrics):
            if self.state.throttle.show(kind, iteration):
                self.engine.print(f"[yellow]iteration {iteration}: {warning}")
            self.state.warnings.append(f"{iteration}: {warning}")
            metrics["warn/pattern_collapse"] = 1.0
        if self.cfg.sample_every and iteration % self.cfg.sample_every == 0 and self.engine.is_main:
            scores = batch.experience.scores.tolist()
            rows = [
                {"prompt": p, "response": r, "score": float(s)}
                for p, r, s in zip(batch.prompts, batch.responses, scores, strict=True)
            ]
            self.engine.run.write_samples(f"iter_{iteration:06d}", rows[: self.cfg.num_samples])
        if (
            self.cfg.eval_every
            and iteration % self.cfg.eval_every == 0
            and iteration < self.total_iters
        ):
            metrics.update(self.evaluate(iteration))
        if iteration % self.cfg.log_every == 0 or iteration == self.total_iters:
            self.engine.log(metrics, iteration)
        self.state.iteration = iteration
        if self.engine.should_save(iteration):
            self.engine.save(iteration, self.state.state_dict())
        return metrics

    def end(self, metrics: dict[str, float]) -> OnlineResult:
        """After the loop: the final evaluation (completed runs, merged into `metrics`), the
        console summary of hidden warnings, a last checkpoint and the trained policy in RUN/policy
        (with the critic in RUN/critic when there is one) unless the run stopped on NaN (the last
        good checkpoint stays); then the rollout engine and the engine are closed."""
        engine, state, models, status = self.engine, self.state, self.models, self.status
        final: dict[str, float] = {}
        if status == "completed":
            final = self.evaluate(self.total_iters)
            if final:
                engine.log(final, self.total_iters)
        if state.throttle.hidden:
            engine.print(
                f"[yellow]{len(state.warnings)} pattern-collapse warnings in all "
                f"({state.throttle.hidden} repeats not shown; metric warn/pattern_collapse)"
            )
        if state.skipped:
            reasons = ", ".join(f"{n} for {why}" for why, n in state.skipped.items())
            engine.print(f"[yellow]rollout batches skipped in this session: {reasons}")
        last = state.iteration
        if status != "stopped_on_nan" and last > self.start and not engine.should_save(last):
            engine.save(last, state.state_dict())
        metrics.update(final)
        acc = engine.accelerator
        policy_path = engine.run.path / "policy"
        if engine.is_main and status != "stopped_on_nan":
            save_policy(acc.unwrap_model(models.policy), models.tokenizer, policy_path)
            if models.critic is not None:
                acc.unwrap_model(models.critic).save(engine.run.path / "critic", models.tokenizer)
        models.engine.close()
        engine.close()
        return OnlineResult(policy_path, engine.run.path, metrics, status, last, state.warnings)
