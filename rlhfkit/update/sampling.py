"""What every online trainer shares about its sampler: the rollout engine built from the
config, the policy's weights pushed to it after each update, and the importance-sampling
correction between the engine's log-probs and the trainer's (`core.importance_weights`).

    sampler = build_sampler(cfg, tokenizer)     # before the run directory: a model vLLM cannot
                                                # run is one line and nothing is written
    push = push_policy(models, acc, version)    # after each update → metrics
    correct = build_correction(cfg)             # once; adv, stats = correct(exp, adv)

Decisions:
- Under `accelerate launch` each process owns a colocated engine (`vllm`) and samples its own
  share of the prompts with it (the rows are seeded by their global number, as with the local
  sampler); a `vllm_server` is shared: the main process pushes, every process waits for it.
- The correction multiplies the advantages by the weights w_t ≥ 0. For PPO-Clip, dual clip and
  the plain surrogate this is the per-token loss multiplied by w_t (−min(ρ·wA, clip(ρ)·wA) =
  w·−min(ρA, clip(ρ)A)); the KL-loss, entropy and ptx terms are not weighted (TRL likewise).
  PPO's critic targets (returns) are computed before, unweighted.
- `is_correction: auto` is off with the local sampler (its log-probs are the trainer's own) and
  `token_truncate` (Yao et al. 2025, C = 2) with vLLM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlhfkit.core import importance_weights
from rlhfkit.engine import launched_processes
from rlhfkit.rollout import (
    EngineError,
    Experience,
    OnlineModels,
    RolloutEngine,
    build_engine,
    sync_weights,
)
from rlhfkit.update.config import OnlineConfig

__all__ = ["Correction", "build_correction", "build_sampler", "push_policy"]

Correction = Callable[[Experience, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]

_CORRECTIONS = {
    "token_truncate": ("token", "truncate"),
    "token_mask": ("token", "mask"),
    "sequence_truncate": ("sequence", "truncate"),
    "sequence_mask": ("sequence", "mask"),
}


def build_sampler(cfg: OnlineConfig, tokenizer: Any) -> RolloutEngine | None:
    """The configured vLLM engine or server client (None: the local sampler, which needs the
    policy and is made with `OnlineModels`). Torch's threads are set first: vLLM disables
    `torch.set_num_threads` while it starts."""
    if cfg.rollout.engine == "local":
        return None
    if cfg.rollout.engine == "vllm" and launched_processes() > 1:
        raise EngineError(
            "rollout.engine=vllm is one engine in one process; under accelerate launch its "
            "in-process engine would start a process group of its own beside Accelerate's. Use "
            "rollout.engine=vllm_server: one `rlhfkit rollout serve` shared by every process"
        )
    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)
    return build_engine(
        cfg.rollout,
        tokenizer,
        model_path=cfg.policy.name_or_path,
        weights_dir=Path(cfg.out_dir) / "rollout_weights",
        seed=cfg.engine.seed,
        tokenizer_path=cfg.tokenizer,
    )


def push_policy(models: OnlineModels, acc: Any, version: int) -> dict[str, float]:
    """Bring the engine to the policy's `version` (iterations whose updates it holds)."""
    shared = models.engine.name == "vllm_server"
    stats = sync_weights(
        models.engine, models.policy, version, push=acc.is_main_process or not shared
    )
    if shared and acc.num_processes > 1:
        acc.wait_for_everyone()
    return stats


def build_correction(cfg: OnlineConfig) -> Correction:
    choice = cfg.is_correction
    if choice == "auto":
        choice = "off" if cfg.rollout.engine == "local" else "token_truncate"
    if choice == "off":
        return lambda exp, adv: (adv, {})
    level, mode = _CORRECTIONS[choice]

    def correct(exp: Experience, adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if exp.sampling_logprobs is None:
            raise ValueError(f"is_correction={choice} needs the engine's sampling log-probs")
        w = importance_weights(
            exp.old_logprobs,
            exp.sampling_logprobs,
            exp.response_mask,
            level=level,
            mode=mode,
            clip_min=cfg.is_clip_min,
            clip_max=cfg.is_clip_max,
        )
        return adv * w.weights, {
            "rollout_correction/ratio_mean": float(w.ratio_mean),
            "rollout_correction/ratio_max": float(w.ratio_max),
            "rollout_correction/clipped_fraction": float(w.clipped_fraction),
            "rollout_correction/max_abs_logprob_diff": float(w.max_abs_logprob_diff),
        }

    return correct
