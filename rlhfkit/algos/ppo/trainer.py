"""Stage 3: PPO against a reward model (`rlhfkit ppo`), with the PPO-Max recipe as flags.

One iteration reads top to bottom as numbered steps in `train`: 1. rollout (sampling and the
scoring pass), 2. shape rewards, 3. advantages, 4. update (epochs × mini-batches), 5. KL control,
6. log / evaluate / checkpoint. The math is `rlhfkit.core`; sampling, scoring and in-loop
evaluation are `rlhfkit.rollout`; the policy and critic steps are `rlhfkit.update` (shared with
the critic-free trainers); accumulation and the optimiser step are `rlhfkit.engine.steps`.

Implementation details and their sources:

1. Four models (InstructGPT; Ziegler et al. 2019): policy (trained), critic (trained, separate
   network, separate AdamW with its own learning rate), reward model and reference (frozen,
   `inference_mode`). With LoRA the reference is the policy with adapters disabled.
2. Dropout is off in every model (all stay in eval mode): with dropout the first-epoch ratio
   π/π_old is not 1 and the KL estimates are noisy (TRL `PPOTrainer` disables dropout too).
3. `old_logprobs` come from the sampling pass (see `rlhfkit.rollout.experience`); training
   logits are divided by the sampling temperature, like the sampler's (TRL, OpenRLHF).
4. Rewards: the score goes on the last valid response token, −β·KL_t on every token
   (`core.shape_rewards`, InstructGPT eq. 2); optionally the score is first reduced by
   `missing_eos_penalty` when the response never ended (TRL `missing_eos_penalty`), normalised
   by running mean/std and clipped (PPO-Max §5.4, "reward normalization and clipping").
5. GAE with γ, λ on the shaped rewards and rollout values (`core.gae`); advantages are whitened
   over the whole rollout batch as a separate step (PPO-Max; CleanRL `norm_adv`), then optionally
   clipped. Returns are not whitened (they are the critic's targets).
6. Update: `ppo_epochs` passes, each a fresh permutation of the rollout split into mini-batches;
   per mini-batch one policy and one critic optimiser step, each accumulated over
   `grad_accum_steps` micro-batches normalised by the mini-batch's global token (or sequence)
   count (`core.aggregate_loss`), then global gradient-norm clipping (PPO-Max). Policy loss:
   PPO-Clip or PPO-Penalty, picked once at setup; minus `entropy_coef`·entropy; plus `ptx_coef`
   × NLL on a batch of demonstrations (InstructGPT PPO-ptx). Critic loss: clipped value loss.
7. Critic warm-up (PPO-Max §5.4: critic initialised from the reward model and trained alone
   before policy optimisation): the first `critic_warmup_iters` iterations update the critic only.
8. KL control after each iteration from the mean per-sequence KL of the rollout (Ziegler et al.
   2019 §2.2; TRL updates its controller with the same quantity and the batch size).
9. NaN/inf in scores, log-probs, values, losses or gradient norms: `on_nan=skip` drops the
   batch (or the optimiser step) and counts it; `on_nan=stop` ends the run without saving, so
   the last checkpoint on disk is the last good state (docs/architecture.md, "Reliability").
10. Checkpoints: models, optimisers, schedulers (Accelerate), RNG states (engine), and
    `update.OnlineState`: iteration, prompt-sampler position and generator, the mini-batch and
    ptx generators, KL controller, running reward moments, collapse-monitor history (sampling
    is seeded per row from (seed, iteration, row), `rollout.row_seeds`). Resuming gives
    bit-identical weights on CPU (tested, also with 2 processes: docs/scale.md).
11. Under `accelerate launch`: each process samples and scores its share of the prompts, every
    process holds the gathered batch, each trains on its share of every mini-batch with global
    normalisers (docs/scale.md; 2 processes ≡ 1 tested).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from rlhfkit.algos.ppo.config import PPOConfig
from rlhfkit.core import gae, sequence_kl, shape_rewards, whiten
from rlhfkit.data import stop_token_ids
from rlhfkit.engine import (
    Engine,
    NonFiniteError,
    build_optimizer,
    build_scheduler,
)
from rlhfkit.env import EnvRollout, build_env, episode_metrics
from rlhfkit.models import ModelConfig, check_source, load_critic
from rlhfkit.rollout import (
    Collected,
    Experience,
    Judge,
    OnlineModels,
    collect_sharded,
    ended_at,
    explained_variance,
    rollout_metrics,
    with_turn_rewards,
)
from rlhfkit.update import (
    Correction,
    build_correction,
    build_objective,
    critic_step,
    policy_step,
    push_policy,
)
from rlhfkit.update.data import (
    OnlineData,
    build_online_reward,
    load_policies,
    next_ptx,
    read_online_inputs,
)
from rlhfkit.update.loop import OnlineLoop, evaluate_held_out, minibatch_epochs, timing_metrics
from rlhfkit.update.state import OnlineResult, OnlineState

__all__ = ["PPOResult", "PPORun", "advantages_and_returns", "setup", "train", "update"]


PPOResult = OnlineResult  # policy_path, run_dir, metrics, status, iterations_done, warnings


@dataclass
class PPORun:
    """Everything one PPO run holds: config, engine, data, models, optimisers, state."""

    cfg: PPOConfig
    engine: Engine
    data: OnlineData
    models: OnlineModels  # policy, tokenizer, reward, reference, critic
    optimizer: torch.optim.Optimizer
    scheduler: Any
    critic_optimizer: torch.optim.Optimizer
    critic_scheduler: Any
    state: OnlineState
    judges: dict[str, Judge]
    correction: Correction  # importance weights for another engine's samples (or none)
    env: EnvRollout | None = None  # a multi-turn environment (None: one reply per prompt)
    collect: Callable[..., Collected] = collect_sharded  # the rollout step (env: episodes)

    @property
    def total_iters(self) -> int:
        return self.cfg.critic_warmup_iters + self.cfg.iterations


def setup(
    cfg: PPOConfig,
    *,
    judges: dict[str, Judge] | None = None,
    reward_fn: Callable[..., Sequence[float]] | None = None,
) -> PPORun:
    """Read the data (bad rows reported before anything is written), start the engine, load
    the four models, build the optimisers, and resume from the latest checkpoint if any."""
    if cfg.critic is not None:
        check_source(cfg.critic.name_or_path, "critic.name_or_path")
    inputs = read_online_inputs(cfg, rows_per_iteration=cfg.rollout_batch_size, reward_fn=reward_fn)
    env = build_env(cfg)  # `env:` (None: one reply per prompt); a bad path is one line, here
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    acc = engine.accelerator

    # models: policy and critic trained; reference and reward model frozen
    policy, ref_policy = load_policies(cfg, engine, use_ref=True)
    critic_cfg = cfg.critic or ModelConfig(
        name_or_path=cfg.reward_model or cfg.policy.name_or_path,
        dtype=cfg.policy.dtype,
        gradient_checkpointing=cfg.policy.gradient_checkpointing,
    )
    critic = load_critic(critic_cfg).to(engine.device).eval()
    engine.compile(critic)
    # an environment rewards its own episodes
    reward = build_online_reward(cfg, engine, reward_fn=reward_fn) if env is None else None

    steps_per_iter = cfg.ppo_epochs * math.ceil(cfg.rollout_batch_size / cfg.mini_batch_size)
    optimizer = build_optimizer(policy.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.iterations * steps_per_iter)
    critic_optimizer = build_optimizer(critic.parameters(), cfg.critic_optim)
    total_iters = cfg.critic_warmup_iters + cfg.iterations
    critic_scheduler = build_scheduler(
        critic_optimizer, cfg.critic_optim, total_iters * steps_per_iter
    )
    policy, critic, optimizer, critic_optimizer = acc.prepare(
        policy, critic, optimizer, critic_optimizer
    )
    acc.register_for_checkpointing(scheduler, critic_scheduler)

    state = OnlineState.resumed(cfg, inputs.data.prompts, engine)
    models = OnlineModels(
        policy,
        inputs.tokenizer,
        reward,
        ref_policy,
        use_ref=True,
        critic=critic,
        engine=inputs.sampler,
    )
    collect = collect_sharded if env is None else partial(collect_sharded, collect_fn=env.collect)
    return PPORun(
        cfg=cfg,
        engine=engine,
        data=inputs.data,
        models=models,
        optimizer=optimizer,
        scheduler=scheduler,
        critic_optimizer=critic_optimizer,
        critic_scheduler=critic_scheduler,
        state=state,
        judges=dict(judges or {}),
        correction=build_correction(cfg),
        env=env,
        collect=collect,
    )


def adjusted_scores(run: PPORun, exp: Experience) -> torch.Tensor:
    """The score that enters the reward: minus `missing_eos_penalty` for replies that never
    ended, then normalised by running moments and clipped (PPO-Max), as configured."""
    cfg, eos_id = run.cfg, stop_token_ids(run.models.tokenizer)
    scores = exp.scores.clone()
    if cfg.missing_eos_penalty is not None:
        ended = (ended_at(exp.response_ids, eos_id) & exp.response_mask).any(1)
        scores = torch.where(ended, scores, scores - cfg.missing_eos_penalty)
    if cfg.reward_normalize:
        run.state.reward_moments.update(scores)
        scores = (scores - run.state.reward_moments.mean) / max(run.state.reward_moments.std, 1e-8)
    if cfg.reward_clip is not None:
        scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
    return scores


def advantages_and_returns(
    cfg: PPOConfig, rewards: torch.Tensor, exp: Experience
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE on the shaped rewards and rollout values; whitening over the whole rollout batch as
    its own step, then optional clipping. Returns are not whitened (the critic's targets)."""
    advantages, returns = gae(rewards, exp.old_values, exp.response_mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, exp.response_mask)
    if cfg.advantage_clip is not None:
        advantages = advantages.clamp(-cfg.advantage_clip, cfg.advantage_clip)
    return advantages, returns


def update(
    run: PPORun,
    exp: Experience,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    train_policy: bool,
) -> tuple[dict[str, float], int]:
    """`ppo_epochs` passes, each a fresh permutation split into mini-batches; per mini-batch one
    policy step (after the critic warm-up) and one critic step. Returns the mean statistics and
    how many steps were skipped for NaN/inf (`on_nan=stop` re-raises `NonFiniteError`)."""
    cfg, acc, engine = run.cfg, run.engine.accelerator, run.engine
    objective = build_objective(cfg)
    pad_id = run.models.tokenizer.pad_token_id
    common = dict(
        grad_accum_steps=cfg.grad_accum_steps,
        max_new_tokens=cfg.rollout.max_new_tokens,
        autocast=engine.autocast,
    )

    def step(rows: torch.Tensor) -> dict[str, float]:
        mb = exp.select(rows)
        width = mb.response_mask.shape[1]
        mb_adv, mb_ret = advantages[rows][:, :width], returns[rows][:, :width]
        stats: dict[str, float] = {}
        if train_policy:
            ptx = next_ptx(
                run.data.ptx_items,
                batch_size=cfg.ptx_batch_size,
                generator=run.state.ptx_gen,
                pad_id=pad_id,
            )
            stats |= policy_step(
                acc,
                run.models.policy,
                run.optimizer,
                run.scheduler,
                mb,
                mb_adv,
                objective,
                max_grad_norm=cfg.optim.max_grad_norm,
                ptx_batch=ptx,
                **common,
            )
        stats |= critic_step(
            acc,
            run.models.critic,
            run.critic_optimizer,
            run.critic_scheduler,
            mb,
            mb_ret,
            value_clip_eps=cfg.value_clip_eps,
            loss_mode=cfg.loss_mode,
            max_grad_norm=cfg.critic_optim.max_grad_norm,
            **common,
        )
        return stats

    return minibatch_epochs(
        exp.input_ids.shape[0],
        epochs=cfg.ppo_epochs,
        mini_batch_size=cfg.mini_batch_size,
        generator=run.state.shuffle_gen,
        step=step,
        on_nan=cfg.on_nan,
        shard=(acc.process_index, acc.num_processes),
    )


def evaluate(run: PPORun, iteration: int) -> dict[str, float]:
    """`eval/*` on the held-out prompts (`update.evaluate_held_out`; no critic forward)."""
    m = run.models
    models = OnlineModels(m.policy, m.tokenizer, m.reward, m.ref_policy, engine=m.engine)
    return evaluate_held_out(run, iteration, models=models, env=run.env)


def train(
    cfg: PPOConfig,
    *,
    judges: dict[str, Judge] | None = None,
    reward_fn: Callable[..., Sequence[float]] | None = None,
) -> PPOResult:
    """Run PPO as configured; returns where the policy was saved and the final metrics.

    `judges` score held-out replies at each evaluation (`eval/<name>`), e.g. the simulated
    world's gold scorer; `reward_fn(prompts, responses[, records]) -> floats` replaces the
    reward model.
    """
    run = setup(cfg, judges=judges, reward_fn=reward_fn)
    engine, state, acc = run.engine, run.state, run.engine.accelerator
    eos_id = stop_token_ids(run.models.tokenizer)
    loop = OnlineLoop.of(run, total_iters=run.total_iters, evaluate=lambda i: evaluate(run, i))
    metrics, sync = loop.begin()  # the engine samples from the policy as it is; eval/* at 0
    for iteration in loop.iterations(desc="ppo"):
        t0 = time.perf_counter()
        train_policy = iteration > cfg.critic_warmup_iters

        # 1. rollout: one reply per prompt; old/ref log-probs, old values, scores (each process
        # samples its share, seeded per row; every process then holds the whole batch)
        index = state.prompts.next_batch(cfg.rollout_batch_size)
        batch = run.collect(
            run.models,
            state.prompts,
            index,
            (cfg.engine.seed, iteration),
            cfg.rollout,
            acc,
            autocast=engine.autocast,
            reuse_sampling_logprobs=acc.mixed_precision == "no",
        )
        exp = batch.experience
        # episodes' statistics ({} without env); stops the run past episode.max_error_rate
        env_stats = episode_metrics(batch.episodes, cfg.episode.max_error_rate)
        verdict = loop.check_rollout(
            iteration,
            tensors=(exp.scores, exp.old_logprobs, exp.ref_logprobs, exp.old_values),
            exp=exp,
            reward=run.models.reward,
        )
        if verdict == "stop":
            break
        if verdict == "skip":
            continue

        # 2. shape rewards: adjusted score on the last valid token, −β·KL on every token, an
        # episode's earlier turns' rewards on their turns' last tokens
        scores = adjusted_scores(run, exp)
        kl_coef = state.kl_ctl.value
        rewards = shape_rewards(
            scores,
            exp.old_logprobs,
            exp.ref_logprobs,
            exp.response_mask,
            kl_coef,
            cfg.kl_estimator,
        )
        rewards = with_turn_rewards(rewards, exp)

        # 3. advantages: GAE, whitening as its own step, optional clipping
        advantages, returns = advantages_and_returns(cfg, rewards, exp)
        # the policy's advantages reweighted when another engine sampled (critic targets not)
        advantages, correction_stats = run.correction(exp, advantages)

        # 4. update: epochs × mini-batches, one policy and one critic optimiser step each
        t_update = time.perf_counter()
        try:
            stats, skipped = update(run, exp, advantages, returns, train_policy)
        except NonFiniteError:
            loop.stop_on_nan()
            break
        t_train = time.perf_counter()
        sync = push_policy(run.models, acc, iteration)  # the rollout engine gets the new weights

        # 5. KL control from the mean per-sequence KL of this rollout
        mask = exp.response_mask
        kl_to_ref = float(sequence_kl(exp.old_logprobs, exp.ref_logprobs, mask).mean())
        if train_policy:
            state.kl_ctl.update(kl_to_ref, n_steps=len(index))

        # 6. log, samples, evaluation, checkpoint
        metrics = rollout_metrics(exp, eos_id)
        metrics |= {
            "reward/shaped_score_mean": float(scores.mean()),
            "reward/kl_penalty": -kl_coef * kl_to_ref,  # mean Σ_t −β·(log π − log π_ref)
            "policy/kl_coef": kl_coef,
            "critic/explained_variance": explained_variance(exp.old_values, returns, mask),
            "critic/warmup": float(not train_policy),
        }
        metrics |= timing_metrics(batch, t0=t0, t_update=t_update, t_train=t_train, skipped=skipped)
        metrics |= stats | correction_stats | sync | env_stats
        loop.end_iteration(iteration, metrics=metrics, batch=batch)

    # the final evaluation, the last checkpoint, the policy and the critic saved
    return loop.end(metrics)
