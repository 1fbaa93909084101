"""What every online trainer reads and loads before its loop: the model sources and rewards
checked, the prompts (and held-out prompts, ptx demonstrations) read, the batch shape checked
against the processes, the policy and its reference loaded — each mistake one line before a
run directory exists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.config import ConfigError
from rlhfkit.engine import Engine, launched_processes
from rlhfkit.models import ModelConfig, check_fits, check_source, load_policy, load_tokenizer
from rlhfkit.rollout import (
    PromptSource,
    Reward,
    RolloutEngine,
    build_reward,
    check_rewards,
    read_prompt_source,
)
from rlhfkit.update.config import OnlineConfig
from rlhfkit.update.sampling import build_sampler

__all__ = [
    "OnlineData",
    "OnlineInputs",
    "build_online_reward",
    "check_model_sources",
    "check_shardable",
    "freeze",
    "load_policies",
    "next_ptx",
    "read_online_data",
    "read_online_inputs",
]


@dataclass
class OnlineData:
    prompts: PromptSource
    eval_prompts: PromptSource | None
    ptx_items: list | None


@dataclass
class OnlineInputs:
    """What an online trainer has before its engine starts (`read_online_inputs`)."""

    tokenizer: Any
    data: OnlineData
    sampler: RolloutEngine | None  # vLLM or a server (None: the local sampler)


def read_online_inputs(
    cfg: OnlineConfig,
    *,
    rows_per_iteration: int,
    reward_fn: Callable[..., Sequence[float]] | None = None,
) -> OnlineInputs:
    """The prologue of every online trainer, before its run directory exists: model sources
    and rewards checked, the tokenizer loaded, the data read, the longest prompt + reply
    checked against the policy's context, `rows_per_iteration` rollout rows (prompts × samples
    per prompt) checked against the mini-batch and the processes, the rollout engine built."""
    check_model_sources(cfg, reward_fn)
    tokenizer = load_tokenizer(
        cfg.tokenizer or cfg.policy.name_or_path,
        "tokenizer" if cfg.tokenizer else "policy.name_or_path",
    )
    data = read_online_data(cfg, tokenizer, rows_per_batch=cfg.rollout_batch_size)
    longest = max(len(p.input_ids) for p in data.prompts.encoded) + cfg.rollout.max_new_tokens
    check_fits(cfg.policy, longest, "the longest prompt + rollout.max_new_tokens")
    check_shardable(rows_per_iteration, cfg.mini_batch_size)
    sampler = build_sampler(cfg, tokenizer)  # vLLM / server: before the run directory exists
    return OnlineInputs(tokenizer, data, sampler)


def build_online_reward(
    cfg: OnlineConfig,
    engine: Engine,
    *,
    reward_fn: Callable[..., Sequence[float]] | None = None,
) -> Reward:
    """The configured reward (reward model, Python functions, or `reward_fn`, a callable given
    to `train`, in their place) on the engine's device (`rollout.build_reward`)."""
    return build_reward(
        cfg.rewards,
        reward_model=cfg.reward_model,
        reward_tokenizer=cfg.reward_tokenizer,
        reward_fn=cfg.reward_fn,
        fn=reward_fn,
        device=engine.device,
    )


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


def read_online_data(cfg: OnlineConfig, tokenizer: Any, *, rows_per_batch: int) -> OnlineData:
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
    cfg: OnlineConfig, engine: Engine, *, use_ref: bool
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
    items: list | None, *, batch_size: int, generator: torch.Generator, pad_id: int
) -> dict[str, torch.Tensor] | None:
    """A random batch of ptx demonstrations (None without ptx data)."""
    if items is None:
        return None
    from rlhfkit.data import collate_sft

    pick = torch.randint(len(items), (batch_size,), generator=generator).tolist()
    return collate_sft([items[i] for i in pick], pad_id)


def check_shardable(rows: int, mini_batch_size: int) -> None:
    """Under `accelerate launch` every process takes an equal share of each mini-batch; say so
    in one line (a `ConfigError`, exit 2) before the run directory is made when that cannot be."""
    w = launched_processes()
    if w > 1 and (rows % w or mini_batch_size % w):
        raise ConfigError(
            f"mini_batch_size ({mini_batch_size}) and the rollout's rows ({rows}) must be "
            f"multiples of the number of processes ({w})"
        )
