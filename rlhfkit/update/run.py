"""What an online run holds besides its models, and the setup every online trainer shares.

`OnlineState` is everything a checkpoint must store beyond Accelerate's `save_state` (models,
optimisers, schedulers, RNG states): the iteration, the prompt position, the mini-batch / ptx
generators (sampling needs none: row i of iteration k is seeded from (seed, k, i)), the KL
controller, running reward moments and the collapse monitor's history. `state_dict` / `load_state_dict` make resume exact (tested per trainer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rlhfkit.config import ConfigError
from rlhfkit.core import AdaptiveKLController, FixedKLController, RunningMoments
from rlhfkit.engine import Engine, latest_checkpoint, launched_processes
from rlhfkit.models import ModelConfig, check_source, load_policy
from rlhfkit.rollout import (
    CollapseMonitor,
    ConsoleThrottle,
    PromptSource,
    RewardError,
    check_rewards,
    read_prompt_source,
)
from rlhfkit.update.config import OnlineConfig

__all__ = [
    "OnlineData",
    "OnlineResult",
    "OnlineState",
    "check_model_sources",
    "end_iteration",
    "end_run",
    "evaluate_held_out",
    "finite",
    "freeze",
    "load_policies",
    "minibatch_epochs",
    "check_shardable",
    "next_ptx",
    "read_online_data",
    "rollout_is_bad",
    "timing_metrics",
]


@dataclass
class OnlineState:
    prompts: PromptSource
    kl_ctl: FixedKLController | AdaptiveKLController
    shuffle_gen: torch.Generator
    ptx_gen: torch.Generator
    reward_moments: RunningMoments = field(default_factory=RunningMoments)
    monitor: CollapseMonitor = field(default_factory=CollapseMonitor)
    throttle: ConsoleThrottle = field(default_factory=ConsoleThrottle)  # console only
    iteration: int = 0  # the last iteration whose effects are in the models and this state
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # console only: batches skipped, why

    @classmethod
    def new(cls, cfg: OnlineConfig, prompts: PromptSource) -> OnlineState:
        seed = cfg.engine.seed
        kl_ctl = (
            AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if cfg.kl_control == "adaptive"
            else FixedKLController(cfg.kl_coef)
        )
        return cls(
            prompts=prompts,
            kl_ctl=kl_ctl,
            shuffle_gen=torch.Generator().manual_seed(seed + 2),
            ptx_gen=torch.Generator().manual_seed(seed + 3),
            monitor=CollapseMonitor(window=cfg.collapse_window),
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "prompts": self.prompts.state_dict(),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "ptx_gen": self.ptx_gen.get_state(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "reward_moments": self.reward_moments.state_dict(),
            "monitor": self.monitor.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        self.prompts.load_state_dict(state["prompts"])
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.ptx_gen.set_state(state["ptx_gen"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.reward_moments.load_state_dict(state["reward_moments"])
        self.monitor.load_state_dict(state["monitor"])


@dataclass
class OnlineData:
    prompts: PromptSource
    eval_prompts: PromptSource | None
    ptx_items: list | None


def check_model_sources(cfg: OnlineConfig, reward_fn: Any = None) -> None:
    """Every model and tokenizer folder the run will load exists (or is a loadable hub name),
    and the reward is well-formed (one source; every 'package.module:function' imports:
    `rollout.check_rewards`; `reward_fn`, a Python callable given to `train`, replaces the
    configured reward), checked before a run directory is made: each mistake is one
    `FileNotFoundError` / `ConfigError` naming its config key (`models.check_source`), not a
    traceback after the policy has loaded."""
    sources = [
        (cfg.policy.name_or_path, "policy.name_or_path", "model"),
        (cfg.tokenizer, "tokenizer", "tokenizer"),
        (cfg.ref_policy, "ref_policy", "model"),
        (cfg.reward_model, "reward_model", "model"),
        (cfg.reward_tokenizer, "reward_tokenizer", "tokenizer"),
    ]
    for i, spec in enumerate(cfg.rewards):
        sources += [
            (spec.model, f"rewards[{i}].model", "model"),
            (spec.tokenizer, f"rewards[{i}].tokenizer", "tokenizer"),
        ]
    for name, key, kind in sources:
        if name and not name.startswith("tiny:"):
            check_source(name, key, kind)
    if cfg.env:  # the environment rewards its episodes; a reward model may still seed a critic
        given = [k for k in ("rewards", "reward_fn") if getattr(cfg, k)]
        if given or reward_fn is not None:
            raise ConfigError(
                f"env={cfg.env} rewards its own episodes: remove {' and '.join(given) or 'reward_fn'}"
            )
        return
    check_rewards(
        cfg.rewards,
        reward_model=cfg.reward_model,
        reward_tokenizer=cfg.reward_tokenizer,
        reward_fn=cfg.reward_fn,
        fn=reward_fn,
    )


def read_online_data(cfg: OnlineConfig, tokenizer: Any, rows_per_batch: int) -> OnlineData:
    """Prompts (every bad row reported before a run directory or a model exists), held-out
    prompts and ptx demonstrations; `rows_per_batch` prompts must fit in one pass."""
    from rlhfkit.data import DataError, Problem

    prompts = read_prompt_source(cfg.data.train, tokenizer, cfg.data, seed=cfg.engine.seed)
    if len(prompts) < rows_per_batch:
        raise DataError(
            [
                Problem(
                    cfg.data.train,
                    len(prompts),
                    "rollout_batch_size",
                    f"{rows_per_batch} prompts per iteration but the file holds {len(prompts)}",
                )
            ],
            "too few prompts",
        )
    eval_prompts = None
    if cfg.eval_prompts:
        eval_prompts = read_prompt_source(
            cfg.eval_prompts, tokenizer, cfg.data, limit=cfg.eval_size
        )
    ptx_items = None
    if cfg.ptx_data and cfg.ptx_coef > 0.0:
        from rlhfkit.data import encode_sft, read_sft
        from rlhfkit.data.readers import require_records

        read = read_sft(cfg.ptx_data, on_error=cfg.data.on_error)
        records = require_records(read, cfg.ptx_data, "sft").records  # empty: one line, now
        max_len = cfg.data.max_prompt_length + cfg.rollout.max_new_tokens
        ptx_items = encode_sft(
            tokenizer, records, max_len, cfg.data.max_prompt_length, cfg.data.prompt_template
        )
    return OnlineData(prompts, eval_prompts, ptx_items)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    return model.eval().requires_grad_(False)


def load_policies(
    cfg: OnlineConfig, engine: Engine, use_ref: bool
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The policy (trainable, eval mode: no dropout) and, when `use_ref` and the policy has no
    LoRA adapters to switch off, a frozen reference copy (None otherwise)."""
    policy = load_policy(cfg.policy).to(engine.device).eval()
    ref_policy = None
    if use_ref and cfg.policy.lora is None:
        ref_cfg = ModelConfig(name_or_path=cfg.ref_policy or cfg.policy.name_or_path)
        ref_policy = freeze(load_policy(ref_cfg.model_copy(update={"dtype": cfg.policy.dtype})))
        ref_policy.to(engine.device)
    engine.compile(policy, ref_policy)
    return policy, ref_policy


def next_ptx(
    items: list | None, batch_size: int, gen: torch.Generator, pad_id: int
) -> dict[str, torch.Tensor] | None:
    """A random batch of ptx demonstrations (None without ptx data)."""
    if items is None:
        return None
    from rlhfkit.data import collate_sft

    pick = torch.randint(len(items), (batch_size,), generator=gen).tolist()
    return collate_sft([items[i] for i in pick], pad_id)


def timing_metrics(
    batch: Any, t0: float, t_update: float, t_train: float, skipped: int
) -> dict[str, float]:
    """Throughput and the time split of one iteration (`batch` is the rollout's `Collected`)."""
    return {
        "perf/tokens_per_s": int(batch.experience.response_mask.sum()) / (t_train - t0),
        "time/generation": batch.seconds_generation,
        "time/scoring": t_update - t0 - batch.seconds_generation,
        "time/training": t_train - t_update,
        "nan/skipped_steps": skipped,
    }


def end_iteration(
    engine: Engine,
    state: OnlineState,
    cfg: OnlineConfig,
    iteration: int,
    total_iters: int,
    metrics: dict[str, float],
    batch: Any,
    evaluate: Any,
) -> dict[str, float]:
    """Step 6 of every online loop: collapse warnings, sample file, periodic evaluation, metrics
    line and checkpoint. `batch` is this rollout's `Collected`; `evaluate(iteration)` returns
    `eval/*` metrics (or {} without held-out prompts). Returns the logged metrics."""
    for kind, warning in state.monitor.check_kinds(metrics):
        if state.throttle.show(kind, iteration):
            engine.print(f"[yellow]iteration {iteration}: {warning}")
        state.warnings.append(f"{iteration}: {warning}")
        metrics["warn/pattern_collapse"] = 1.0
    if cfg.sample_every and iteration % cfg.sample_every == 0 and engine.is_main:
        scores = batch.experience.scores.tolist()
        rows = [
            {"prompt": p, "response": r, "score": float(s)}
            for p, r, s in zip(batch.prompts, batch.responses, scores, strict=True)
        ]
        engine.run.write_samples(f"iter_{iteration:06d}", rows[: cfg.num_samples])
    if cfg.eval_every and iteration % cfg.eval_every == 0 and iteration < total_iters:
        metrics.update(evaluate(iteration))
    if iteration % cfg.log_every == 0 or iteration == total_iters:
        engine.log(metrics, iteration)
    state.iteration = iteration
    if engine.should_save(iteration):
        engine.save(iteration, state.state_dict())
    return metrics


def end_run(
    engine: Engine, state: OnlineState, start: int, status: str, evaluate: Any, total_iters: int
) -> dict[str, float]:
    """After the loop: the final evaluation (completed runs), the console summary of hidden
    warnings, and a last checkpoint unless the run stopped on NaN (the last good one stays)."""
    final: dict[str, float] = {}
    if status == "completed":
        final = evaluate(total_iters)
        if final:
            engine.log(final, total_iters)
    if state.throttle.hidden:
        engine.print(
            f"[yellow]{len(state.warnings)} pattern-collapse warnings in all "
            f"({state.throttle.hidden} repeats not shown; metric warn/pattern_collapse)"
        )
    if state.skipped:
        reasons = ", ".join(f"{n} for {why}" for why, n in state.skipped.items())
        engine.print(f"[yellow]rollout batches skipped in this session: {reasons}")
    last = state.iteration
    if status != "stopped_on_nan" and last > start and not engine.should_save(last):
        engine.save(last, state.state_dict())
    return final


def check_shardable(rows: int, mini_batch_size: int) -> None:
    """Under `accelerate launch` every process takes an equal share of each mini-batch; say so
    in one line (a `ConfigError`, exit 2) before the run directory is made when that cannot be."""
    from rlhfkit.config import ConfigError

    w = launched_processes()
    if w > 1 and (rows % w or mini_batch_size % w):
        raise ConfigError(
            f"mini_batch_size ({mini_batch_size}) and the rollout's rows ({rows}) must be "
            f"multiples of the number of processes ({w})"
        )


def minibatch_epochs(
    n_rows: int,
    epochs: int,
    mini_batch_size: int,
    generator: torch.Generator,
    step: Any,
    on_nan: str,
    shard: tuple[int, int] = (0, 1),
) -> tuple[dict[str, float], int]:
    """`epochs` passes over the rollout's rows, each a fresh permutation split into
    mini-batches; `step(rows) -> stats` runs one optimiser step (or two, with a critic) on this
    process's contiguous share of each mini-batch (`shard` = (rank, world); every process
    draws the same permutation, so the shares of a mini-batch are its 1/world parts).
    Returns the mean of each statistic and how many steps NaN/inf made skip; with
    `on_nan="stop"` the `NonFiniteError` propagates (the caller stops the run)."""
    from rlhfkit.engine import NonFiniteError

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


@dataclass
class OnlineResult:
    policy_path: Any  # Path: the trained policy, a HF folder with its tokenizer (RUN/policy)
    run_dir: Any  # Path
    metrics: dict[str, float]  # the last iteration's metrics and the final evaluation
    status: str = "completed"  # completed | stopped (stop_after) | stopped_on_nan
    iterations_done: int = 0
    warnings: list[str] = field(default_factory=list)


def finite(*tensors: torch.Tensor | None) -> bool:
    """Whether every given tensor (None: absent, fine) holds only finite values."""
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def evaluate_held_out(
    engine: Engine,
    cfg: OnlineConfig,
    data: OnlineData,
    models: Any,
    judges: dict[str, Any],
    iteration: int,
    env: Any = None,
) -> dict[str, float]:
    """`eval/*` on the held-out prompts (the same draws at every evaluation: the generator is
    seeded from the run seed), with the replies written to RUN/samples/eval_NNNNNN.jsonl. Under
    `accelerate launch` every process evaluates all the held-out prompts (the same numbers
    everywhere; not sharded) and the main process writes them. With an environment (`env`, an
    `env.EnvRollout`): one episode per prompt, `eval/env/*`, transcripts written."""
    from rlhfkit.env import evaluate_env
    from rlhfkit.rollout import evaluate_online

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


def rollout_is_bad(
    engine: Engine,
    state: OnlineState,
    cfg: OnlineConfig,
    iteration: int,
    exp: Any = None,
    reward: Any = None,
) -> str:
    """A rollout with NaN/inf in its scores, log-probs or values (`exp`, its `Experience`), or
    a reward function that failed on it (`reward.failures`, gathered from every process).

    A failed reward function follows `on_reward_error`: "stop" closes the engine and raises a
    `RewardError` naming the function, the iteration and the problem (the last checkpoint on
    disk is the last good state; `rlhfkit` prints it as one line, exit 2), "skip" drops the
    batch, counted in `reward/failed_batches`. Other NaN/inf follow `on_nan`: "stop" (returned;
    the caller ends the run, keeping the last checkpoint) or "skip" (the batch is dropped,
    counted in `nan/skipped_batches`). One bad score drops the whole batch, not only its group:
    the batch's statistics (whitening, KL control, running moments) are not computed on a part.
    Either way the console says what was found, with counts. Returns "stop" or "skip"."""
    failures = list(dict.fromkeys(_gathered(engine, reward.take_failures() if reward else [])))
    what = _nan_report(exp) if exp is not None else "NaN/inf in the rollout"
    if failures:
        why = "; ".join(failures)
        if cfg.on_reward_error == "stop":
            last = latest_checkpoint(engine.run.checkpoints)
            kept = f"its last checkpoint {last} is kept" if last else "no checkpoint was written"
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
