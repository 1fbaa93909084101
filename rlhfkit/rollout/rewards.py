"""Building an online trainer's reward from its configuration.

A run's reward is one `Reward` (a weighted sum of scorers). The configuration offers two ways:

- the shortcuts `reward_model` (+ `reward_tokenizer` when the RM has its own tokenizer) or
  `reward_fn` ('package.module:function'): one component of weight 1;
- `rewards:`, a list of `RewardSpec`s (each a reward model folder or a function, with a weight
  and a name), TRL's `reward_funcs` + `reward_weights`. Each component is logged as
  `reward/<name>`; the trainer optimises the weighted sum.

Give exactly one of the three (two are a `ConfigError`, not a silent choice: to sum a reward
model and a function, list both under `rewards:` with their weights); none is a `ConfigError`
too. `check_rewards` says so, and imports every function path, before a run directory exists. A
Python callable passed to `train(..., reward_fn=f)` replaces all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from pydantic import model_validator

from rlhfkit.config import ConfigBase, ConfigError
from rlhfkit.rollout.scorers import (
    CallableScorer,
    RetokenizingRewardModelScorer,
    Reward,
    RewardModelScorer,
    Scorer,
    import_callable,
)

__all__ = ["RewardSpec", "build_reward", "check_rewards"]


class RewardSpec(ConfigBase):
    name: str = ""
    """Name in the metrics (`reward/<name>`); default: the folder's or function's name."""
    model: str | None = None
    """A reward model folder (a `rlhfkit rm` output or any *ForSequenceClassification folder)."""
    tokenizer: str | None = None
    """The reward model's own tokenizer when it differs from the policy's (replies are decoded
    and each (dialogue, reply) re-encoded in the RM's template, + EOS); null: the policy's ids."""
    template: Literal["chat", "raw"] = "chat"
    """The RM's prompt template when `tokenizer` is set (as its `rlhfkit rm` run used)."""
    fn: str | None = None
    """A Python reward, 'package.module:function', taking (prompts, responses[, records]) and
    returning one float per reply (e.g. `rlhfkit.sim.rewards:arithmetic_exact_match`)."""
    weight: float = 1.0
    """Weight of this component in the sum the trainer optimises."""

    @model_validator(mode="after")
    def _one_source(self) -> RewardSpec:
        if (self.model is None) == (self.fn is None):
            raise ValueError("a reward needs exactly one of `model` (a folder) or `fn`")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        if self.fn:
            return self.fn.rsplit(":", 1)[-1]
        return "rm"


def _scorer(spec: RewardSpec, device: torch.device, key: str) -> Scorer:
    if spec.fn:
        return CallableScorer(import_callable(spec.fn, key), name=spec.fn)
    from rlhfkit.models import load_reward_model, load_tokenizer

    rm = load_reward_model(spec.model, device=device)
    if spec.tokenizer:
        return RetokenizingRewardModelScorer(
            rm, load_tokenizer(spec.tokenizer), template=spec.template
        )
    return RewardModelScorer(rm)


def _resolved(
    specs: Sequence[RewardSpec],
    reward_model: str | None,
    reward_tokenizer: str | None,
    reward_fn: str | None,
) -> list[tuple[str, RewardSpec]]:
    """(config key of the function path, spec) for each configured component; a
    `ConfigError` unless exactly one of `rewards`, `reward_fn`, `reward_model` is given."""
    given = [k for k, v in (("rewards", specs), ("reward_fn", reward_fn),
                            ("reward_model", reward_model)) if v]  # fmt: skip
    if not given:
        raise ConfigError(
            "no reward: set reward_model (a folder), reward_fn ('package.module:function') "
            "or rewards (a weighted list of both kinds)"
        )
    if len(given) > 1:
        raise ConfigError(
            f"{' and '.join(given)} are set: give one (`{given[-1]}=` drops {given[-1]}), or "
            "list every reward under `rewards:` with its weight for a weighted sum"
        )
    if specs:
        return [(f"rewards[{i}].fn", spec) for i, spec in enumerate(specs)]
    if reward_fn:
        return [("reward_fn", RewardSpec(fn=reward_fn))]
    return [("reward_model", RewardSpec(model=reward_model, tokenizer=reward_tokenizer))]


def check_rewards(
    specs: Sequence[RewardSpec],
    *,
    reward_model: str | None = "",
    reward_tokenizer: str | None = None,
    reward_fn: str | None = None,
    fn: Callable[..., Sequence[float]] | None = None,
) -> None:
    """What `build_reward` will build is well-formed: exactly one reward source and every
    function path imports (a `ConfigError` naming the key otherwise). Called before a run
    directory is made; reward model folders are checked with the other models
    (`update.check_model_sources`)."""
    if fn is not None:
        return
    for key, spec in _resolved(specs, reward_model, reward_tokenizer, reward_fn):
        if spec.fn:
            import_callable(spec.fn, key)


def build_reward(
    specs: Sequence[RewardSpec],
    *,
    reward_model: str | None = "",
    reward_tokenizer: str | None = None,
    reward_fn: str | None = None,
    fn: Callable[..., Sequence[float]] | None = None,
    device: torch.device | Any = "cpu",
) -> Reward:
    """The run's `Reward`: `fn` if given, else the one configured source (`rewards`, the
    `reward_fn` or the `reward_model` shortcut). Raises `ConfigError` when none or several are
    configured (`check_rewards`)."""
    if fn is not None:
        return Reward([(getattr(fn, "__name__", "reward_fn"), CallableScorer(fn), 1.0)])
    resolved = _resolved(specs, reward_model, reward_tokenizer, reward_fn)
    return Reward(
        [(spec.label(), _scorer(spec, device, key), spec.weight) for key, spec in resolved]
    )
