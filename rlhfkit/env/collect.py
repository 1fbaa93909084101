"""Environments on the trainers' rollout path: the multi-turn `collect`, its metrics, the
held-out evaluation, and `build_env` (the config keys `env`, `env_args`, `episode`).

    env = build_env(cfg)          # None without `env:`; a bad factory path is one line, before
                                  # the run directory exists
    batch = collect_sharded(models, source, index, key, cfg.rollout, acc, collect_fn=env.collect)
    metrics |= episode_metrics(batch.episodes, env.cfg.max_error_rate)

Implementation details and their sources:

1. `EnvRollout.collect` has `rollout.collect`'s signature and returns the same `Collected`, so
   `collect_sharded` shares it over processes unchanged (rows seeded by their global number;
   every process ends with the whole batch, episodes included).
2. The `Experience`: prompt = the opening turns, response = everything after them; the model
   attends to every token (the environment's included), `response_mask` is the action mask
   (True exactly on sampled tokens), so the policy loss, KL, entropy, whitening, GAE, length
   metrics and the critic's targets see the policy's tokens only. `scores` is the last turn's
   reward (the trainers put it on the last action token); `turn_rewards` holds the earlier
   turns' rewards on their turns' last tokens (`rollout.with_turn_rewards`, PPO);
   `rollout.episode_returns` is their sum (the critic-free estimators' outcome, as verl's
   `compute_grpo_outcome_advantage` sums the token-level rewards).
3. Old log-probs: the sampler's, kept token by token as sampled (`reuse_sampling_logprobs`, as
   in `collect`); reference log-probs and values from one forward over each whole episode.
4. Escape hatch: `episode.rollout_fn: package.module:function` replaces `run_episodes` — any
   code that returns the same `Episode` records (token ids, action mask, log-probs, rewards).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.engine import gathered
from rlhfkit.env.base import EnvError, Environment, EpisodeConfig
from rlhfkit.env.driver import Episode, check_episode, episodes_rollout, run_episodes
from rlhfkit.models import check_fits
from rlhfkit.rollout import (
    Collected,
    OnlineModels,
    PromptSource,
    RolloutConfig,
    as_seeds,
    import_callable,
    make_experience,
)
from rlhfkit.types import PromptRecord

__all__ = ["EnvRollout", "EpisodeScores", "build_env", "episode_metrics", "evaluate_env"]


class EpisodeScores:
    """A stand-in for the run's `Reward` inside `make_experience`: the episodes' own scores
    (an environment rewards its episodes itself)."""

    def __init__(self, scores: torch.Tensor) -> None:
        self.scores = scores

    def __call__(self, prompts, responses, rollout, records):  # noqa: ANN001 (Reward's call)
        return self.scores, {"env": self.scores}


def _scores(episodes: Sequence[Episode], turn_rewards: torch.Tensor) -> torch.Tensor:
    """The last turn's reward per episode: its return minus the earlier turns' rewards."""
    total = torch.tensor([e.reward for e in episodes], dtype=torch.float32)
    return total - turn_rewards.sum(1)


@dataclass
class EnvRollout:
    """The environment factory and the driver's settings of a run."""

    make_env: Callable[[], Environment]
    cfg: EpisodeConfig
    rollout_fn: Callable[..., list[Episode]] = run_episodes
    warned: bool = False  # the template fallback is reported once per run

    def episodes(
        self,
        models: OnlineModels,
        records: Sequence[PromptRecord],
        seeds: torch.Tensor,
        cfg: RolloutConfig,
        autocast: Callable[[], Any],
    ) -> list[Episode]:
        device = next(models.policy.parameters()).device
        return self.rollout_fn(
            models.engine, models.tokenizer, self.make_env, records, seeds, cfg, self.cfg,
            device=device, autocast=autocast,
        )  # fmt: skip

    def collect(
        self,
        models: OnlineModels,
        source: PromptSource,
        index: Sequence[int],
        generator: torch.Generator | torch.Tensor,
        cfg: RolloutConfig,
        *,
        group_size: int = 1,
        autocast: Callable[[], Any] = contextlib.nullcontext,
        reuse_sampling_logprobs: bool = True,
    ) -> Collected:
        """`rollout.collect` for episodes: `group_size` episodes per prompt `index` of
        `source`, each seeded by its row (module docstring)."""
        import time

        tok = models.tokenizer
        rows = [i for i in index for _ in range(group_size)]
        records = [source.records[i] for i in rows]
        t0 = time.perf_counter()
        episodes = self.episodes(models, records, as_seeds(generator, len(rows)), cfg, autocast)
        t1 = time.perf_counter()
        self._check_template(tok, episodes)
        rollout, action, turn_rewards = episodes_rollout(
            episodes, tok.pad_token_id, self.cfg.mask_truncated
        )
        prompts = [tok.decode(e.prompt_ids, skip_special_tokens=False) for e in episodes]
        responses = [tok.decode(e.ids, skip_special_tokens=False) for e in episodes]
        with contextlib.ExitStack() as stack, autocast():
            policy = stack.enter_context(gathered(models.policy))
            critic = None if models.critic is None else stack.enter_context(gathered(models.critic))
            experience = make_experience(
                rollout, prompts, responses, records, policy=policy,
                reward=EpisodeScores(_scores(episodes, turn_rewards)),
                temperature=cfg.temperature, ref_policy=models.ref_policy,
                use_ref=models.use_ref, critic=critic,
                reuse_sampling_logprobs=reuse_sampling_logprobs and models.engine.exact,
                action_mask=action,
            )  # fmt: skip
        width = experience.response_mask.shape[1]
        experience.turn_rewards = turn_rewards[:, :width].to(experience.scores.device)
        t2 = time.perf_counter()
        return Collected(experience, prompts, responses, records, t1 - t0, t2 - t1,
                         episodes=[e.summary() for e in episodes])  # fmt: skip

    def _check_template(self, tok: Any, episodes: Sequence[Episode]) -> None:
        """Report (once) a template that is not prefix-preserving, and check the incremental
        ids against a full re-render (`template_check`)."""
        if not self.warned and any(e.template_fallback for e in episodes):
            self.warned = True
            print(
                "env: the chat template is not prefix-preserving; environment messages are "
                "tokenised alone (docs/env.md, 'Chat templates')"
            )
        checked = {"first": episodes[:1], "every": episodes, "off": []}[self.cfg.template_check]
        for e in checked:
            if not check_episode(tok, e):
                raise EnvError(
                    "the incremental token ids of an episode differ from the chat template's "
                    "full rendering of its messages (docs/env.md, 'Chat templates')"
                )


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the normal 95 % interval: 1.96·s/√n; 0 for n < 2)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def episode_metrics(
    episodes: Sequence[dict[str, Any]], max_error_rate: float = 1.0, prefix: str = "env/"
) -> dict[str, float]:
    """What is logged about a batch of episodes (their `summary()` dicts; {} when none):
    return, turns, tool calls, invalid calls, tool errors, truncations, errors, success.
    Raises `EnvError` when the share of episodes ended by an error exceeds `max_error_rate`."""
    if not episodes:
        return {}
    n = len(episodes)
    errors = sum(e["end"] == "error" for e in episodes)
    out = {
        f"{prefix}reward": mean_ci([e["reward"] for e in episodes])[0],
        f"{prefix}turns": sum(e["turns"] for e in episodes) / n,
        f"{prefix}tool_calls": sum(e["tool_calls"] for e in episodes) / n,
        f"{prefix}invalid_calls": sum(e["invalid_calls"] for e in episodes) / n,
        f"{prefix}tool_errors": sum(e["tool_errors"] for e in episodes) / n,
        f"{prefix}truncated": sum(
            e["end"] in ("turn_cap", "token_budget", "length") for e in episodes
        )
        / n,  # fmt: skip
        f"{prefix}errors": float(errors),
        f"{prefix}template_fallbacks": float(sum(e["template_fallback"] for e in episodes)),
    }
    judged = [e["success"] for e in episodes if e["success"] is not None]
    if judged:
        out[f"{prefix}success"] = sum(judged) / len(judged)
    if errors / n > max_error_rate:
        first = next(e["errors"][0] for e in episodes if e["end"] == "error")
        raise EnvError(
            f"{errors} of {n} episodes ended in an environment error (more than "
            f"episode.max_error_rate = {max_error_rate}); first: {first}"
        )
    return out


def evaluate_env(
    env: EnvRollout,
    models: OnlineModels,
    source: PromptSource,
    cfg: RolloutConfig,
    seed: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """One episode per prompt of `source` (batches of `cfg.batch_size`, a fixed generator):
    `eval/env/*` metrics with 95 % intervals (`*_ci`: half-widths) and one transcript row per
    episode (the run writes them to RUN/samples)."""
    generator = torch.Generator().manual_seed(seed)
    episodes: list[dict[str, Any]] = []
    prompts: list[str] = []
    for chunk in torch.arange(len(source)).tensor_split(math.ceil(len(source) / cfg.batch_size)):
        batch = env.collect(models, source, chunk.tolist(), generator, cfg, autocast=autocast)
        episodes += batch.episodes
        prompts += batch.prompts
    out = episode_metrics(episodes, 1.0, prefix="eval/env/")
    for key in ("reward", "turns", "tool_calls", "success"):
        values = [e[key] for e in episodes if e[key] is not None]
        if values:
            out[f"eval/env/{key}"], out[f"eval/env/{key}_ci"] = mean_ci(values)
    rows = [
        {"prompt": p, "messages": e["messages"], "reward": e["reward"], "turns": e["turns"],
         "tool_calls": e["tool_calls"], "end": e["end"], "errors": e["errors"]}
        for p, e in zip(prompts, episodes, strict=True)
    ]  # fmt: skip
    return out, rows


def build_env(cfg: Any) -> EnvRollout | None:
    """The run's environment from `cfg.env` ('package.module:Factory', called with
    `cfg.env_args` once per episode) and `cfg.episode`; None without `env`. A path that does
    not import, a factory that rejects `env_args`, or `episode.max_tokens` beyond the policy's
    positions is one line (before the run directory exists: the factory is called once here)."""
    if not cfg.env:
        return None
    policy = getattr(cfg, "policy", None)
    if policy is not None:  # a whole episode must fit the policy's position table
        check_fits(policy, cfg.episode.max_tokens, "episode.max_tokens")
    try:
        factory = import_callable(cfg.env, "env", arities=None)
    except ValueError as e:
        raise EnvError(str(e)) from None
    args = dict(cfg.env_args)

    def make_env() -> Environment:
        return factory(**args)

    try:
        make_env()
    except TypeError as e:
        raise EnvError(f"env: {cfg.env}(**env_args) failed: {e}") from None
    rollout_fn = run_episodes
    if cfg.episode.rollout_fn:
        try:
            rollout_fn = import_callable(cfg.episode.rollout_fn, "episode.rollout_fn", arities=None)
        except ValueError as e:
            raise EnvError(str(e)) from None
    return EnvRollout(make_env, cfg.episode, rollout_fn)
