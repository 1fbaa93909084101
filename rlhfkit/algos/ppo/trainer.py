"""Stage 3: PPO against a reward model (`rlhfkit ppo`), with the PPO-Max recipe as flags.

One iteration reads top to bottom as numbered steps in `train`: 1. rollout, 2. scoring pass,
3. shape rewards, 4. advantages, 5. update (epochs × mini-batches), 6. KL control,
7. log / evaluate / checkpoint. The math is `rlhfkit.core`; sampling and scoring are
`rlhfkit.rollout`.

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
   the last checkpoint on disk is the last good state (DESIGN.md §5).
10. Checkpoints: models, optimisers, schedulers (Accelerate), RNG states (engine), and in
    `trainer_state`: iteration, prompt-sampler position and generator, the sampling and
    mini-batch generators, KL controller, running reward moments, collapse-monitor history.
    Resuming gives bit-identical weights on CPU (tested).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from rlhfkit.algos.ppo.config import PPOConfig
from rlhfkit.algos.ppo.monitor import (
    CollapseMonitor,
    ConsoleThrottle,
    explained_variance,
    repetition_fraction,
)
from rlhfkit.core import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    aggregate_loss,
    gae,
    perplexity,
    ppo_penalty_loss,
    ppo_policy_loss,
    sequence_kl,
    sft_loss,
    shape_rewards,
    value_loss,
    whiten,
)
from rlhfkit.engine import Engine, build_optimizer, build_scheduler
from rlhfkit.models import (
    ModelConfig,
    load_critic,
    load_policy,
    load_reward_model,
    load_tokenizer,
    position_ids_from_mask,
)
from rlhfkit.rollout import (
    CallableScorer,
    Experience,
    RetokenizingRewardModelScorer,
    RewardModelScorer,
    Rollout,
    Scorer,
    generate,
    import_callable,
    make_experience,
    response_logprobs,
)

if TYPE_CHECKING:
    from rlhfkit.data.chat import Template

__all__ = ["PPOResult", "train"]

Judge = Callable[[list[str], list[str]], Sequence[float]]


@dataclass
class PPOResult:
    policy_path: Path  # the trained policy, a HF folder with its tokenizer (RUN/policy)
    run_dir: Path
    metrics: dict[str, float]  # the last iteration's metrics and the final evaluation
    status: str = "completed"  # completed | stopped (stop_after) | stopped_on_nan
    iterations_done: int = 0
    warnings: list[str] = field(default_factory=list)


# -- setup -----------------------------------------------------------------------------------------


@dataclass
class Prompts:
    """Encoded prompts and their texts, dealt in seeded shuffled passes (the data position)."""

    ids: list[list[int]]
    texts: list[str]
    generator: torch.Generator
    order: list[int] = field(default_factory=list)
    cursor: int = 0

    def next_batch(self, n: int) -> list[int]:
        if n > len(self.ids):
            raise ValueError(f"rollout_batch_size {n} exceeds the {len(self.ids)} prompts")
        if self.cursor + n > len(self.order):  # a new pass; the remainder is dropped
            self.order = torch.randperm(len(self.ids), generator=self.generator).tolist()
            self.cursor = 0
        batch = self.order[self.cursor : self.cursor + n]
        self.cursor += n
        return batch

    def collate(self, index: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (B, P) ids and mask (True = valid)."""
        width = max(len(self.ids[i]) for i in index)
        ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.bool)
        for row, i in enumerate(index):
            n = len(self.ids[i])
            ids[row, width - n :] = torch.tensor(self.ids[i], dtype=torch.long)
            mask[row, width - n :] = True
        return ids, mask

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "cursor": self.cursor, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.cursor = list(state["order"]), int(state["cursor"])
        self.generator.set_state(state["rng"])


def read_prompt_texts(path: str, cfg: PPOConfig, tokenizer: Any) -> list[str]:
    """Prompt texts as the policy sees them (chat template / HH format, or raw text)."""
    from rlhfkit.data import format_prompt, read_prompts

    result = read_prompts(path, format=cfg.data.format, on_error=cfg.data.on_error)
    records = result.records
    if not records:
        raise ValueError(f"{path}: no prompts found")
    texts = []
    for rec in records:
        try:
            texts.append(format_prompt(tokenizer, rec.prompt, cfg.data.prompt_template))
        except ValueError as e:
            raise ValueError(f"{rec.source}: prompt: {e}") from None
    return texts


def encode_texts(
    tokenizer: Any, texts: list[str], max_len: int, template: Template
) -> list[list[int]]:
    """Token ids of each formatted prompt (special tokens as `data.encode_prompt` adds them),
    keeping the last `max_len` tokens."""
    from rlhfkit.data import prompt_special_tokens

    if not texts:
        return []
    special = prompt_special_tokens(tokenizer, template)
    encoded = tokenizer(texts, add_special_tokens=special)["input_ids"]
    return [list(ids[-max_len:]) for ids in encoded]


def build_scorer(cfg: PPOConfig, reward_fn: Callable | None, device: torch.device) -> Scorer:
    """The reward: a Python function (argument or `cfg.reward_fn`), else the reward model."""
    if reward_fn is not None:
        return CallableScorer(reward_fn)
    if cfg.reward_fn:
        return CallableScorer(import_callable(cfg.reward_fn), name=cfg.reward_fn)
    if not cfg.reward_model:
        raise ValueError("ppo: give reward_model (a folder) or reward_fn ('module:function')")
    rm = load_reward_model(cfg.reward_model, device=device)
    if cfg.reward_tokenizer:
        return RetokenizingRewardModelScorer(rm, load_tokenizer(cfg.reward_tokenizer))
    return RewardModelScorer(rm)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    return model.eval().requires_grad_(False)


def read_ptx(cfg: PPOConfig, tokenizer: Any) -> list[dict[str, torch.Tensor]] | None:
    """Demonstrations for the ptx loss, tokenized once (prompt + response + EOS)."""
    if not cfg.ptx_data or cfg.ptx_coef == 0.0:
        return None
    from rlhfkit.data import encode_sft, read_sft

    records = read_sft(cfg.ptx_data, on_error=cfg.data.on_error).records
    max_len = cfg.data.max_prompt_length + cfg.rollout.max_new_tokens
    return encode_sft(
        tokenizer, records, max_len, cfg.data.max_prompt_length, cfg.data.prompt_template
    )


# -- the update ----------------------------------------------------------------------------------


def split_rows(n: int, parts: int) -> list[torch.Tensor]:
    return [idx for idx in torch.arange(n).tensor_split(parts) if len(idx)]


def ptx_loss(policy: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean NLL of the demonstration responses (InstructGPT PPO-ptx)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logits = policy(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
    ).logits
    return sft_loss(logits[:, :-1], ids[:, 1:], batch["response_mask"][:, 1:]).loss


@contextlib.contextmanager
def autocast(acc: Any) -> Iterator[None]:
    """The configured autocast; under bf16 on a CPU also the "math" attention kernel, whose
    forward + backward is ~2.4x faster there than the CPU flash kernel in bf16 (16×4 heads × 62
    tokens, torch 2.13; in fp32 the flash kernel is the faster one and stays)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(acc.autocast())
        if acc.mixed_precision == "bf16" and acc.device.type == "cpu":
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


def finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


# -- the loop ------------------------------------------------------------------------------------


def train(
    cfg: PPOConfig,
    *,
    judges: dict[str, Judge] | None = None,
    reward_fn: Callable[[list[str], list[str]], Sequence[float]] | None = None,
) -> PPOResult:
    """Run PPO as configured; returns where the policy was saved and the final metrics.

    `judges` score held-out responses at each evaluation (`eval/<name>`), e.g. the simulated
    world's gold scorer; `reward_fn(prompts, responses) -> floats` replaces the reward model.
    """
    # data first: every bad row is reported before a run directory or a model exists
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy.name_or_path)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    template = cfg.data.prompt_template
    texts = read_prompt_texts(cfg.data.train, cfg, tokenizer)
    prompts = Prompts(
        encode_texts(tokenizer, texts, cfg.data.max_prompt_length, template),
        texts,
        torch.Generator().manual_seed(cfg.engine.seed),
    )
    eval_texts = (
        read_prompt_texts(cfg.eval_prompts, cfg, tokenizer)[: cfg.eval_size]
        if (cfg.eval_prompts)
        else []
    )
    eval_ids = encode_texts(tokenizer, eval_texts, cfg.data.max_prompt_length, template)
    ptx_items = read_ptx(cfg, tokenizer)
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    acc, device = engine.accelerator, engine.device

    # models: policy and critic trained; reference and reward model frozen
    policy = load_policy(cfg.policy).to(device).eval()
    ref_policy = None
    if cfg.policy.lora is None:
        ref_cfg = ModelConfig(name_or_path=cfg.ref_policy or cfg.policy.name_or_path)
        ref_policy = freeze(load_policy(ref_cfg.model_copy(update={"dtype": cfg.policy.dtype})))
        ref_policy.to(device)
    critic_cfg = cfg.critic or ModelConfig(
        name_or_path=cfg.reward_model or cfg.policy.name_or_path, dtype=cfg.policy.dtype
    )
    critic = load_critic(critic_cfg).to(device).eval()
    scorer = build_scorer(cfg, reward_fn, device)

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

    kl_ctl = (
        AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        if cfg.kl_control == "adaptive"
        else FixedKLController(cfg.kl_coef)
    )
    policy_loss_fn = {
        "clip": functools.partial(ppo_policy_loss, clip_eps=cfg.clip_eps, mode=cfg.loss_mode),
        "penalty": functools.partial(
            ppo_penalty_loss, kl_coef=cfg.penalty_coef, mode=cfg.loss_mode
        ),
    }[cfg.policy_loss]
    reward_moments = RunningMoments()
    monitor = CollapseMonitor(window=cfg.collapse_window)
    throttle = ConsoleThrottle()  # console only: every warning is kept in the result
    sample_gen = torch.Generator().manual_seed(cfg.engine.seed + 1)
    shuffle_gen = torch.Generator().manual_seed(cfg.engine.seed + 2)
    ptx_gen = torch.Generator().manual_seed(cfg.engine.seed + 3)

    def trainer_state(iteration: int) -> dict[str, Any]:
        return {
            "iteration": iteration,
            "prompts": prompts.state_dict(),
            "sample_gen": sample_gen.get_state(),
            "shuffle_gen": shuffle_gen.get_state(),
            "ptx_gen": ptx_gen.get_state(),
            "kl_ctl": kl_ctl.state_dict(),
            "reward_moments": reward_moments.state_dict(),
            "monitor": monitor.state_dict(),
        }

    state = engine.resume()
    start = 0
    if state:
        start = state["iteration"]
        prompts.load_state_dict(state["prompts"])
        sample_gen.set_state(state["sample_gen"])
        shuffle_gen.set_state(state["shuffle_gen"])
        ptx_gen.set_state(state["ptx_gen"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        reward_moments.load_state_dict(state["reward_moments"])
        monitor.load_state_dict(state["monitor"])

    def rollout_and_score(index: Sequence[int], source: Prompts, gen: torch.Generator):
        prompt_ids, prompt_mask = source.collate(index, pad_id)
        with autocast(acc):
            rollout = generate(
                policy,
                prompt_ids.to(device),
                prompt_mask.to(device),
                cfg.rollout,
                gen,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
                tokenizer=tokenizer,
            )
        t_gen = time.perf_counter()
        responses = decode_responses(tokenizer, rollout)
        with autocast(acc):
            exp = make_experience(
                rollout,
                [source.texts[i] for i in index],
                responses,
                policy=policy,
                ref_policy=ref_policy,
                critic=critic,
                scorer=scorer,
                temperature=cfg.rollout.temperature,
                reuse_sampling_logprobs=acc.mixed_precision == "no",
            )
        return rollout, exp, responses, t_gen

    def evaluate(iteration: int) -> dict[str, float]:
        if not eval_texts:
            return {}
        source = Prompts(eval_ids, eval_texts, torch.Generator())
        gen = torch.Generator().manual_seed(cfg.engine.seed + 10_000)  # same draws every eval
        out: dict[str, float] = {}
        scores, kls, lengths, all_responses = [], [], [], []
        for chunk in split_rows(len(eval_ids), math.ceil(len(eval_ids) / cfg.rollout.batch_size)):
            index = chunk.tolist()
            _, exp, responses, _ = rollout_and_score(index, source, gen)
            scores.append(exp.scores)
            per_seq = torch.where(
                exp.response_mask, exp.old_logprobs - exp.ref_logprobs, torch.zeros(())
            ).sum(1)
            kls.append(per_seq)
            lengths.append(exp.response_mask.sum(1).float())
            all_responses += responses
        out["eval/rm_score"] = float(torch.cat(scores).mean())
        out["eval/kl_to_ref"] = float(torch.cat(kls).mean())
        out["eval/length_mean"] = float(torch.cat(lengths).mean())
        for name, judge in (judges or {}).items():
            values = [float(v) for v in judge(list(eval_texts), all_responses)]
            out[f"eval/{name}"] = sum(values) / len(values)
        engine.run.write_samples(
            f"eval_{iteration:06d}",
            [{"prompt": p, "response": r} for p, r in zip(eval_texts, all_responses, strict=True)],
        )
        return out

    metrics: dict[str, float] = {}
    status, warnings_seen = "completed", []
    if start == 0 and eval_texts:
        metrics.update(evaluate(0))
        engine.log(metrics, 0)
    last_done = start  # the last iteration whose effects are in the models and state
    for iteration in engine.progress(range(start + 1, total_iters + 1), desc="ppo"):
        if cfg.stop_after is not None and iteration > cfg.stop_after:
            status = "stopped"
            break
        t0 = time.perf_counter()
        train_policy = iteration > cfg.critic_warmup_iters

        # 1-2. rollout and scoring pass: responses, old/ref log-probs, old values, scores
        index = prompts.next_batch(cfg.rollout_batch_size)
        rollout, exp, responses, t_gen = rollout_and_score(index, prompts, sample_gen)
        t_score = time.perf_counter()
        mask = exp.response_mask
        if not finite(exp.scores, exp.old_logprobs, exp.ref_logprobs, exp.old_values):
            if cfg.on_nan == "stop":
                status = "stopped_on_nan"
                engine.print("[red]NaN/inf in the rollout: stopping; the last checkpoint is kept")
                break
            engine.print(f"[yellow]NaN/inf in rollout {iteration}: batch skipped")
            engine.log({"nan/skipped_batches": 1}, iteration)
            last_done = iteration
            continue

        # 3. shape rewards: adjusted score on the last valid token, −β·KL on every token
        raw_scores = exp.scores
        scores = raw_scores.clone()
        ended = (exp.response_ids == eos_id) & mask
        if cfg.missing_eos_penalty is not None:
            scores = torch.where(ended.any(1), scores, scores - cfg.missing_eos_penalty)
        if cfg.reward_normalize:
            reward_moments.update(scores)
            scores = (scores - reward_moments.mean) / max(reward_moments.std, 1e-8)
        if cfg.reward_clip is not None:
            scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
        rewards = shape_rewards(
            scores, exp.old_logprobs, exp.ref_logprobs, mask, kl_ctl.value, cfg.kl_estimator
        )

        # 4. advantages: GAE on shaped rewards, whitening as its own step, optional clipping
        advantages, returns = gae(rewards, exp.old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        if cfg.advantage_clip is not None:
            advantages = advantages.clamp(-cfg.advantage_clip, cfg.advantage_clip)

        # 5. update: epochs × mini-batches, one policy and one critic optimiser step each
        stats: dict[str, list[float]] = {}
        skipped_steps = 0
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(len(index), generator=shuffle_gen)
            for mb_rows in perm.split(cfg.mini_batch_size):
                mb = exp.select(mb_rows)
                mb_adv, mb_ret = (
                    x[mb_rows][:, : mb.response_mask.shape[1]] for x in (advantages, returns)
                )
                num_tokens = mb.response_mask.sum()
                num_seqs = len(mb_rows)
                step_stats, ok = update_minibatch(
                    mb,
                    mb_adv,
                    mb_ret,
                    num_tokens,
                    num_seqs,
                    train_policy=train_policy,
                    policy=policy,
                    critic=critic,
                    optimizer=optimizer,
                    critic_optimizer=critic_optimizer,
                    policy_loss_fn=policy_loss_fn,
                    cfg=cfg,
                    acc=acc,
                    ptx_batch=next_ptx(ptx_items, cfg, ptx_gen, pad_id) if train_policy else None,
                )
                if not ok:
                    if cfg.on_nan == "stop":
                        status = "stopped_on_nan"
                        break
                    skipped_steps += 1
                    continue
                if train_policy:
                    scheduler.step()
                critic_scheduler.step()
                for k, v in step_stats.items():
                    stats.setdefault(k, []).append(v)
            if status == "stopped_on_nan":
                break
        if status == "stopped_on_nan":
            engine.print(
                "[red]NaN/inf in a loss or gradient: stopping; the last checkpoint is kept"
            )
            break
        t_train = time.perf_counter()

        # 6. KL control from the mean per-sequence KL of this rollout
        kl_to_ref = float(sequence_kl(exp.old_logprobs, exp.ref_logprobs, mask).mean())
        kl_coef_used = kl_ctl.value
        if train_policy:
            kl_ctl.update(kl_to_ref, n_steps=len(index))

        # 7. log, samples, evaluation, checkpoint
        n_tokens = int(mask.sum())
        metrics = {
            "reward/score_mean": float(raw_scores.mean()),
            "reward/score_std": float(raw_scores.std()) if len(raw_scores) > 1 else 0.0,
            "reward/shaped_score_mean": float(scores.mean()),
            "reward/kl_penalty": float(
                -kl_coef_used
                * torch.where(mask, exp.old_logprobs - exp.ref_logprobs, 0.0).sum(1).mean()
            ),
            "policy/kl_to_ref": kl_to_ref,
            "policy/kl_coef": kl_coef_used,
            "policy/perplexity": perplexity(exp.old_logprobs, mask),
            "ref/perplexity": perplexity(exp.ref_logprobs, mask),
            "response/length_mean": float(mask.sum(1).float().mean()),
            "response/eos_fraction": float(ended.any(1).float().mean()),
            "response/repetition": repetition_fraction(exp.response_ids, mask),
            "critic/explained_variance": explained_variance(exp.old_values, returns, mask),
            "critic/warmup": float(not train_policy),
            "perf/tokens_per_s": n_tokens / (t_train - t0),
            "time/generation": t_gen - t0,
            "time/scoring": t_score - t_gen,
            "time/training": t_train - t_score,
            "nan/skipped_steps": skipped_steps,
        }
        metrics.update({k: sum(v) / len(v) for k, v in stats.items()})
        for kind, warning in monitor.check_kinds(metrics):
            if throttle.show(kind, iteration):
                engine.print(f"[yellow]iteration {iteration}: {warning}")
            warnings_seen.append(f"{iteration}: {warning}")
            metrics["warn/pattern_collapse"] = 1.0
        if cfg.sample_every and iteration % cfg.sample_every == 0:
            rows = [
                {"prompt": prompts.texts[i], "response": r, "score": float(s)}
                for i, r, s in zip(index, responses, raw_scores.tolist(), strict=True)
            ]
            engine.run.write_samples(f"iter_{iteration:06d}", rows[: cfg.num_samples])
        if cfg.eval_every and iteration % cfg.eval_every == 0 and iteration < total_iters:
            metrics.update(evaluate(iteration))
        if iteration % cfg.log_every == 0 or iteration == total_iters:
            engine.log(metrics, iteration)
        last_done = iteration
        if engine.should_save(iteration):
            engine.save(iteration, trainer_state(iteration))

    if status == "completed":
        final_eval = evaluate(total_iters)
        if final_eval:
            engine.log(final_eval, total_iters)
            metrics.update(final_eval)
    if throttle.hidden:
        engine.print(
            f"[yellow]{len(warnings_seen)} pattern-collapse warnings in all ({throttle.hidden} "
            "repeats not shown; metric warn/pattern_collapse)"
        )
    if status != "stopped_on_nan" and last_done > start and not engine.should_save(last_done):
        engine.save(last_done, trainer_state(last_done))
    policy_path = engine.run.path / "policy"
    if engine.is_main and status != "stopped_on_nan":
        save_policy(acc.unwrap_model(policy), tokenizer, policy_path)
        acc.unwrap_model(critic).save(engine.run.path / "critic", tokenizer)
    engine.close()
    return PPOResult(policy_path, engine.run.path, metrics, status, last_done, warnings_seen)


def next_ptx(items: list | None, cfg: PPOConfig, gen: torch.Generator, pad_id: int):
    if items is None:
        return None
    from rlhfkit.data import collate_sft

    pick = torch.randint(len(items), (cfg.ptx_batch_size,), generator=gen).tolist()
    return collate_sft([items[i] for i in pick], pad_id)


def decode_responses(tokenizer: Any, rollout: Rollout) -> list[str]:
    """Response texts: valid tokens only, special tokens (EOS) dropped."""
    rows = [
        ids[mask].tolist()
        for ids, mask in zip(rollout.response_ids, rollout.response_mask, strict=True)
    ]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def update_minibatch(
    mb: Experience,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    num_tokens: torch.Tensor,
    num_seqs: int,
    *,
    train_policy: bool,
    policy: torch.nn.Module,
    critic: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    policy_loss_fn: Callable[..., Any],
    cfg: PPOConfig,
    acc: Any,
    ptx_batch: dict[str, torch.Tensor] | None,
) -> tuple[dict[str, float], bool]:
    """One policy and one critic optimiser step on a mini-batch, over `grad_accum_steps`
    micro-batches normalised by the mini-batch totals. Returns (stats, all finite)."""
    stats: dict[str, float] = {}
    micro = split_rows(num_seqs, cfg.grad_accum_steps)
    totals = {"num_tokens": num_tokens, "num_seqs": num_seqs}
    if train_policy:
        sums = {
            "loss/policy": 0.0,
            "policy/entropy": 0.0,
            "policy/clipfrac": 0.0,
            "policy/approx_kl": 0.0,
        }
        for rows in micro:
            m = mb.select(rows)
            adv = advantages[rows][:, : m.response_mask.shape[1]]
            with autocast(acc):
                logprobs, entropy = response_logprobs(
                    policy,
                    m.input_ids,
                    m.attention_mask,
                    m.prompt_len,
                    cfg.rollout.temperature,
                    with_entropy=True,
                )
            out = policy_loss_fn(logprobs, m.old_logprobs, adv, m.response_mask, **totals)
            loss = out.loss
            entropy_term = aggregate_loss(entropy, m.response_mask, cfg.loss_mode, **totals)
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * entropy_term
            if not finite(loss):
                optimizer.zero_grad(set_to_none=True)
                return stats, False
            acc.backward(loss)
            share = len(rows) / num_seqs
            sums["loss/policy"] += float(out.loss.detach())
            sums["policy/entropy"] += float(entropy_term.detach())
            sums["policy/clipfrac"] += float(out.clipfrac) * share
            sums["policy/approx_kl"] += float(out.approx_kl) * share
        if ptx_batch is not None:  # once per optimiser step, on its own demonstrations
            with autocast(acc):
                ptx = ptx_loss(policy, ptx_batch)
            if not finite(ptx):
                optimizer.zero_grad(set_to_none=True)
                return stats, False
            acc.backward(cfg.ptx_coef * ptx)
            stats["loss/ptx"] = float(ptx.detach())
        grad_norm = clipped_step(acc, policy, optimizer, cfg.optim.max_grad_norm)
        if not math.isfinite(grad_norm):
            return stats, False
        stats.update(sums)
        stats["policy/grad_norm"] = grad_norm

    vsums = {"loss/value": 0.0, "critic/value_clipfrac": 0.0, "critic/value_error": 0.0}
    for rows in micro:
        m = mb.select(rows)
        ret = returns[rows][:, : m.response_mask.shape[1]]
        with autocast(acc):
            values = critic.values(m.input_ids, m.attention_mask, slice(m.prompt_len - 1, -1))
        out = value_loss(
            values.float(),
            m.old_values,
            ret,
            m.response_mask,
            cfg.value_clip_eps,
            cfg.loss_mode,
            **totals,
        )
        if not finite(out.loss):
            critic_optimizer.zero_grad(set_to_none=True)
            return stats, False
        acc.backward(out.loss)
        share = len(rows) / num_seqs
        vsums["loss/value"] += float(out.loss.detach())
        vsums["critic/value_clipfrac"] += float(out.clipfrac) * share
        vsums["critic/value_error"] += float(out.value_error) * share
    grad_norm = clipped_step(acc, critic, critic_optimizer, cfg.critic_optim.max_grad_norm)
    if not math.isfinite(grad_norm):
        return stats, False
    stats.update(vsums)
    stats["critic/grad_norm"] = grad_norm
    return stats, True


def clipped_step(
    acc: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_norm: float | None
) -> float:
    """Clip the global gradient norm, step unless it is NaN/inf (the batch is then skipped),
    clear the gradients; returns the norm before clipping."""
    grad_norm = clip(acc, model, max_norm)
    if math.isfinite(grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def clip(acc: Any, model: torch.nn.Module, max_norm: float | None) -> float:
    """Global gradient-norm clipping (PPO-Max); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is None:
        norms = [p.grad.detach().norm() for p in params]
        return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    return float(acc.clip_grad_norm_(params, max_norm))


def save_policy(policy: torch.nn.Module, tokenizer: Any, path: Path) -> None:
    """A plain HF folder (LoRA adapters merged into a copy) with the tokenizer beside it."""
    if hasattr(policy, "merge_and_unload"):
        import copy

        policy = copy.deepcopy(policy).merge_and_unload()
    policy.save_pretrained(path)
    tokenizer.save_pretrained(path)
