"""`build_engine`: the one place a `RolloutConfig` becomes a rollout engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from rlhfkit.rollout.engines.base import RolloutEngine
from rlhfkit.rollout.engines.local import LocalEngine
from rlhfkit.rollout.generate import RolloutConfig

__all__ = ["build_engine"]


def build_engine(
    cfg: RolloutConfig,
    tokenizer: Any,
    *,
    policy: nn.Module | None = None,
    model_path: str,
    weights_dir: str | Path,
    seed: int,
    tokenizer_path: str | None = None,
) -> RolloutEngine:
    """The engine `cfg.engine` names. `policy`: the model the local sampler runs (needed only
    for `local`); `model_path`: the folder a vLLM engine loads first (the policy's own, or its
    base model under LoRA; trainers push their current weights before the first rollout);
    `weights_dir`: where weights for a server are written unless `vllm.weights_dir` is set."""
    if cfg.engine == "local":
        if policy is None:
            raise ValueError("rollout.engine=local samples from a policy module; none was given")
        return LocalEngine(policy, tokenizer)
    if cfg.engine == "vllm":
        from rlhfkit.rollout.engines.vllm import VLLMEngine

        return VLLMEngine(model_path, tokenizer, cfg.vllm, seed=seed, tokenizer_path=tokenizer_path)
    from rlhfkit.rollout.engines.server import ServerEngine

    return ServerEngine(tokenizer, cfg.vllm, cfg.vllm.weights_dir or weights_dir)
