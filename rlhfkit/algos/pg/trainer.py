"""The critic-free family (`rlhfkit grpo|rloo|reinforce`): G replies per prompt, an advantage
from their rewards alone, and the shared policy step. No critic is built; no reference runs
unless a KL term needs it.

One iteration reads top to bottom in `train`: 1. rollout (G samples per prompt; with dynamic
sampling, more rounds until the batch is full), 2. rewards (overlong shaping, missing-EOS
penalty, KL), 3. advantages (the estimator picked once at setup from `ADVANTAGES`), 4. update
(`update.policy_step` over epochs × mini-batches), 5. KL control, 6. log / evaluate / checkpoint.

Implementation details and their sources:

1. GRPO (Shao et al. 2024, DeepSeekMath §4.1): A_i = (s_i − mean_g)/(std_g + 1e-4), the same for
   every token of reply i (outcome supervision); PPO-Clip surrogate; KL(π ‖ π_ref) as a k3 loss
   term with β = `kl_loss_coef` (default 0, like TRL); loss averaged per reply, then over replies.
2. Dr. GRPO (Liu et al. 2025): no std division (A_i = s_i − mean_g) and the constant normaliser
   Σ token losses / (replies · max_new_tokens) (`loss_mode: seq_mean_token_sum_norm`).
3. DAPO switches (Yu et al. 2025), each a flag: clip-higher (`clip_eps_high` 0.28), dynamic
   sampling (drop groups whose scores are all equal and keep sampling new prompts until the batch
   is full, at most `max_sampling_rounds` rollouts; the share dropped is logged), overlong reward
   shaping (`overlong_cache`: −1 … 0 over the last tokens of the budget, `core.overlong_penalty`),
   token-level loss (`loss_mode: token_mean`).
4. RLOO (Ahmadian et al. 2024): A_i = r_i − mean of the other G − 1 rewards of its group, with
   the KL in the reward: r_i = s_i − β·Σ_t (log π − log π_ref) (TRL `RLOOTrainer`).
5. REINFORCE++ (Hu 2025): token rewards −β·KL_t plus the score on the last token
   (`core.shape_rewards`), discounted returns (γ), whitened over the whole batch
   (`core.whiten`), no critic; `reinforce_pp_baseline` first centres each score on its group
   mean (OpenRLHF `reinforce_baseline`).
6. Checkpoint, exact resume, NaN/inf handling, progress and in-loop evaluation are the shared
   online pieces (`update.OnlineState`, `engine.steps`, `rollout.evaluate_online`).
7. Under `accelerate launch`: each process samples its share of the prompts (a group's G
   replies on one process; rows seeded by (seed, iteration, round, row)), every process holds
   the gathered batch, so group statistics, dynamic sampling and whitening are the one-process
   ones; each trains on its share of every mini-batch (docs/scale.md; 2 processes ≡ 1 tested).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from rlhfkit.algos.pg.config import PGConfig
from rlhfkit.core import (
    discounted_returns,
    group_advantages,
    group_baseline,
    overlong_penalty,
    rloo_advantages,
    sequence_kl,
    shape_rewards,
    whiten,
)
from rlhfkit.data import stop_token_ids
from rlhfkit.engine import Engine, NonFiniteError
from rlhfkit.env import EnvRollout, build_env, episode_metrics
from rlhfkit.rollout import (
    Collected,
    Experience,
    Judge,
    OnlineModels,
    cat_experiences,
    collect_sharded,
    ended_at,
    episode_returns,
    rollout_metrics,
)
from rlhfkit.update import Correction, build_correction, build_objective, policy_step, push_policy
from rlhfkit.update.data import (
    OnlineData,
    build_online_reward,
    load_policies,
    next_ptx,
    read_online_inputs,
)
from rlhfkit.update.loop import OnlineLoop, evaluate_held_out, minibatch_epochs, timing_metrics
from rlhfkit.update.state import OnlineResult, OnlineState

__all__ = ["ADVANTAGES", "PGResult", "PGRun", "advantages", "setup", "train", "update"]


PGResult = OnlineResult  # policy_path, run_dir, metrics, status, iterations_done, warnings


@dataclass
class PGRun:
    cfg: PGConfig
    engine: Engine
    data: OnlineData
    models: OnlineModels  # policy, tokenizer, reward, reference (when a KL term needs it)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: OnlineState
    judges: dict[str, Judge]
    correction: Correction  # importance weights for another engine's samples (or none)
    env: EnvRollout | None = None  # a multi-turn environment (None: one reply per prompt)
    collect: Callable[..., Collected] = collect_sharded  # the rollout step (env: episodes)


# -- 3. advantage estimators: (cfg, experience, scores (N,), β) → advantages (N, R) ------------


def _per_token(values: torch.Tensor, exp: Experience) -> torch.Tensor:
    """A sequence-level advantage on every valid token of its reply (0 at padding)."""
    return torch.where(exp.response_mask, values[:, None], 0.0)


def _kl_in_score(scores: torch.Tensor, exp: Experience, kl_coef: float, cfg: PGConfig):
    if kl_coef == 0:
        return scores
    kl = sequence_kl(exp.old_logprobs, exp.ref_logprobs, exp.response_mask, cfg.kl_estimator)
    return scores - kl_coef * kl


def _reinforce_pp(scores: torch.Tensor, exp: Experience, kl_coef: float, cfg: PGConfig):
    ref = exp.ref_logprobs if exp.ref_logprobs is not None else exp.old_logprobs
    rewards = shape_rewards(
        scores, exp.old_logprobs, ref, exp.response_mask, kl_coef, cfg.kl_estimator
    )
    returns = discounted_returns(rewards, exp.response_mask, cfg.gamma)
    return whiten(returns, exp.response_mask)


ADVANTAGES: dict[str, Callable[[PGConfig, Experience, torch.Tensor, float], torch.Tensor]] = {
    "grpo": lambda cfg, exp, s, kl: _per_token(
        group_advantages(_kl_in_score(s, exp, kl, cfg), cfg.group_size), exp
    ),
    "dr_grpo": lambda cfg, exp, s, kl: _per_token(
        group_baseline(_kl_in_score(s, exp, kl, cfg), cfg.group_size), exp
    ),
    "rloo": lambda cfg, exp, s, kl: _per_token(
        rloo_advantages(_kl_in_score(s, exp, kl, cfg), cfg.group_size), exp
    ),
    "reinforce_pp": lambda cfg, exp, s, kl: _reinforce_pp(s, exp, kl, cfg),
    "reinforce_pp_baseline": lambda cfg, exp, s, kl: _reinforce_pp(
        group_baseline(s, cfg.group_size), exp, kl, cfg
    ),
}


def advantages(cfg: PGConfig, exp: Experience, scores: torch.Tensor, kl_coef: float):
    """The configured estimator's (N, R) advantages."""
    return ADVANTAGES[cfg.advantage](cfg, exp, scores, kl_coef)


# -- setup --------------------------------------------------------------------------------------


def setup(
    cfg: PGConfig,
    *,
    judges: dict[str, Judge] | None = None,
    reward_fn: Callable[..., Sequence[float]] | None = None,
) -> PGRun:
    """Read the data (bad rows reported before anything is written), start the engine, load
    the policy (and the reference only when needed) and the reward, resume if possible."""
    rows = cfg.rollout_batch_size * cfg.group_size
    inputs = read_online_inputs(cfg, rows_per_iteration=rows, reward_fn=reward_fn)
    env = build_env(cfg)  # `env:` (None: one reply per prompt); a bad path is one line, here
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    policy, ref_policy = load_policies(cfg, engine, use_ref=cfg.use_ref)
    # an environment rewards its own episodes
    reward = build_online_reward(cfg, engine, reward_fn=reward_fn) if env is None else None
    steps = cfg.iterations * cfg.ppo_epochs * -(-rows // cfg.mini_batch_size)
    policy, optimizer, scheduler = engine.prepare_trainable(policy, cfg.optim, steps)
    state = OnlineState.resumed(cfg, inputs.data.prompts, engine)
    models = OnlineModels(
        policy, inputs.tokenizer, reward, ref_policy, use_ref=cfg.use_ref, engine=inputs.sampler
    )
    collect = collect_sharded if env is None else partial(collect_sharded, collect_fn=env.collect)
    return PGRun(
        cfg=cfg,
        engine=engine,
        data=inputs.data,
        models=models,
        optimizer=optimizer,
        scheduler=scheduler,
        state=state,
        judges=dict(judges or {}),
        correction=build_correction(cfg),
        env=env,
        collect=collect,
    )


# -- 1. rollout with optional dynamic sampling ---------------------------------------------------


def sample_groups(run: PGRun) -> tuple[Collected, float, int]:
    """G replies for `rollout_batch_size` prompts. With dynamic sampling, groups whose scores
    are all equal are dropped and new prompts sampled (at most `max_sampling_rounds`
    rollouts). Returns the batch, the share of sampled groups dropped, and the rollouts run."""
    cfg, state, g = run.cfg, run.state, run.cfg.group_size
    kept: list[Collected] = []
    n_kept = seen = dropped = rounds = 0
    while rounds < cfg.max_sampling_rounds and n_kept < cfg.rollout_batch_size:
        rounds += 1
        index = state.prompts.next_batch(cfg.rollout_batch_size)
        batch = run.collect(
            run.models,
            state.prompts,
            index,
            (cfg.engine.seed, state.iteration + 1, rounds),
            cfg.rollout,
            run.engine.accelerator,
            group_size=g,
            autocast=run.engine.autocast,
            reuse_sampling_logprobs=run.engine.accelerator.mixed_precision == "no",
        )
        if not cfg.dynamic_sampling:
            return batch, 0.0, 1
        grouped = episode_returns(batch.experience).view(-1, g)
        # a group with a NaN score is kept, so the finite check after the rollout reports it
        keep = (grouped.amax(1) > grouped.amin(1)) | ~grouped.isfinite().all(1)
        informative = keep.nonzero().flatten()[: cfg.rollout_batch_size - n_kept]
        seen += grouped.shape[0]
        dropped += grouped.shape[0] - int(keep.sum())
        if len(informative):
            rows = (informative[:, None] * g + torch.arange(g)).flatten()
            kept.append(_select(batch, rows))
            n_kept += len(informative)
    if not kept:  # every group was uninformative: train on the last batch (zero advantages)
        kept = [batch]
    pad_id = run.models.tokenizer.pad_token_id
    merged = Collected(
        cat_experiences([c.experience for c in kept], pad_id),
        [p for c in kept for p in c.prompts],
        [r for c in kept for r in c.responses],
        [x for c in kept for x in c.records],
        sum(c.seconds_generation for c in kept),
        sum(c.seconds_scoring for c in kept),
        [e for c in kept for e in c.episodes],
    )
    return merged, dropped / max(seen, 1), rounds


def _select(batch: Collected, rows: torch.Tensor) -> Collected:
    index = rows.tolist()
    return Collected(
        batch.experience.select(rows),
        [batch.prompts[i] for i in index],
        [batch.responses[i] for i in index],
        [batch.records[i] for i in index],
        batch.seconds_generation,
        batch.seconds_scoring,
        [batch.episodes[i] for i in index] if batch.episodes else [],
    )


def update(
    run: PGRun, exp: Experience, adv: torch.Tensor, objective: Any
) -> tuple[dict[str, float], int]:
    """`ppo_epochs` passes of mini-batch policy steps; (mean stats, steps skipped for NaN)."""
    cfg, state, acc = run.cfg, run.state, run.engine.accelerator
    pad_id = run.models.tokenizer.pad_token_id

    def step(rows: torch.Tensor) -> dict[str, float]:
        mb = exp.select(rows)
        ptx = next_ptx(
            run.data.ptx_items,
            batch_size=cfg.ptx_batch_size,
            generator=state.ptx_gen,
            pad_id=pad_id,
        )
        return policy_step(
            acc,
            run.models.policy,
            run.optimizer,
            run.scheduler,
            mb,
            adv[rows][:, : mb.response_mask.shape[1]],
            objective,
            grad_accum_steps=cfg.grad_accum_steps,
            max_grad_norm=cfg.optim.max_grad_norm,
            max_new_tokens=cfg.rollout.max_new_tokens,
            ptx_batch=ptx,
            autocast=run.engine.autocast,
        )

    return minibatch_epochs(
        exp.input_ids.shape[0],
        epochs=cfg.ppo_epochs,
        mini_batch_size=cfg.mini_batch_size,
        generator=state.shuffle_gen,
        step=step,
        on_nan=cfg.on_nan,
        shard=(acc.process_index, acc.num_processes),
    )


def evaluate(run: PGRun, iteration: int) -> dict[str, float]:
    """`eval/*` on the held-out prompts (`update.evaluate_held_out`)."""
    return evaluate_held_out(run, iteration, env=run.env)


# -- the loop -----------------------------------------------------------------------------------


def train(
    cfg: PGConfig,
    *,
    judges: dict[str, Judge] | None = None,
    reward_fn: Callable[..., Sequence[float]] | None = None,
) -> PGResult:
    """Run the configured critic-free algorithm; returns the saved policy and final metrics.

    `judges` score held-out replies at each evaluation (`eval/<name>`);
    `reward_fn(prompts, responses[, records]) -> floats` replaces the configured reward.
    """
    run = setup(cfg, judges=judges, reward_fn=reward_fn)
    state, acc = run.state, run.engine.accelerator
    eos_id = stop_token_ids(run.models.tokenizer)
    objective = build_objective(cfg)
    loop = OnlineLoop.of(run, total_iters=cfg.iterations, evaluate=lambda i: evaluate(run, i))
    metrics, sync = loop.begin()  # the engine samples from the policy as it is; eval/* at 0
    for iteration in loop.iterations(desc=cfg.advantage):
        t0 = time.perf_counter()

        # 1. rollout: G replies per prompt (dynamic sampling: until the batch is informative)
        batch, dropped, rounds = sample_groups(run)
        exp = batch.experience
        # episodes' statistics ({} without env); stops the run past episode.max_error_rate
        env_stats = episode_metrics(batch.episodes, cfg.episode.max_error_rate)
        verdict = loop.check_rollout(
            iteration,
            tensors=(exp.scores, exp.old_logprobs, exp.ref_logprobs),
            exp=exp,
            reward=run.models.reward,
        )
        if verdict == "stop":
            break
        if verdict == "skip":
            continue

        # 2. rewards: overlong shaping and missing-EOS penalty on the score (an episode's
        # return: the sum of its turns' rewards)
        lengths = exp.response_mask.sum(1)
        scores = episode_returns(exp).clone()
        if cfg.overlong_cache is not None:
            scores = scores + overlong_penalty(
                lengths, cfg.rollout.max_new_tokens, cfg.overlong_cache
            )
        ended = (ended_at(exp.response_ids, eos_id) & exp.response_mask).any(1)
        if cfg.missing_eos_penalty is not None:
            scores = torch.where(ended, scores, scores - cfg.missing_eos_penalty)

        # 3. advantages: the estimator picked at setup (KL in the reward where β > 0)
        kl_coef = state.kl_ctl.value
        adv = advantages(cfg, exp, scores, kl_coef)
        adv, correction_stats = run.correction(exp, adv)  # off unless another engine sampled

        # 4. update: epochs × mini-batches of the shared policy step
        t_update = time.perf_counter()

        try:
            stats, skipped = update(run, exp, adv, objective)
        except NonFiniteError:
            loop.stop_on_nan()
            break
        t_train = time.perf_counter()
        sync = push_policy(run.models, acc, iteration)  # the rollout engine gets the new weights

        # 5. KL control (when the KL is in the reward) from the mean per-sequence KL
        metrics = rollout_metrics(exp, eos_id)
        if cfg.kl_coef > 0 and "policy/kl_to_ref" in metrics:
            state.kl_ctl.update(metrics["policy/kl_to_ref"], n_steps=exp.input_ids.shape[0])

        # 6. log, samples, evaluation, checkpoint
        grouped = exp.scores.view(-1, cfg.group_size) if cfg.group_size > 1 else None
        metrics |= {
            "reward/shaped_score_mean": float(scores.mean()),
            "reward/group_std": float(grouped.std(1).mean()) if grouped is not None else 0.0,
            "sampling/dropped_group_fraction": dropped,
            "sampling/rounds": rounds,
            "policy/kl_coef": kl_coef,
            "reward/kl_penalty": -kl_coef * metrics.get("policy/kl_to_ref", 0.0),
        }
        metrics |= timing_metrics(batch, t0=t0, t_update=t_update, t_train=t_train, skipped=skipped)
        metrics |= stats | correction_stats | sync | env_stats
        loop.end_iteration(iteration, metrics=metrics, batch=batch)

    # the final evaluation, the last checkpoint, the policy saved
    return loop.end(metrics)
