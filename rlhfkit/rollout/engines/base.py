"""The rollout-engine interface: how every sampler of rlhfkit is reached.

    engine = build_engine(cfg.rollout, policy, tokenizer, model_path=..., seed=..., threads=...)
    rollout = engine.generate(prompt_ids, prompt_mask, cfg.rollout, seeds)   # → Rollout
    engine.push_weights(weights, version)        # after the policy changed (no-op for `local`)
    engine.close()

Contract of `generate`: `prompt_ids`, `prompt_mask` (N, P) left-padded, mask True = valid;
`seeds` (N,) int64, one per row (`as_seeds` turns a torch.Generator into them, as the local
sampler always did). Returns a `Rollout`: responses right-padded, `response_mask` True up to and
including the token that ended the reply (EOS or the one completing a stop string), `logprobs`
(N, R) float32 of each sampled token under the distribution it was drawn from (tempered; 0 at
padding), `finish_reasons` "stop" | "length" per row. G samples of a prompt are G rows.

`exact` says whether the engine's log-probs are the trainer's own arithmetic (the local sampler:
the trainer may reuse them as `old_logprobs`); with any other engine the trainer recomputes the
old log-probs and keeps the engine's as `sampling_logprobs` for the importance-sampling
correction (`core.importance_weights`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

from rlhfkit.errors import UserError
from rlhfkit.rollout.generate import Rollout, RolloutConfig, as_seeds

__all__ = ["EngineError", "RolloutEngine", "as_seeds"]  # as_seeds: re-exported from generate


class EngineError(UserError):
    """A rollout engine that cannot be had or stopped answering (one line for the user)."""

    kind = "rollout engine error"


class RolloutEngine(Protocol):
    name: str
    exact: bool  # True: log-probs are bitwise the trainer's (reusable as old_logprobs)
    weights_version: int  # the policy version the engine samples from (0: as loaded)

    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        cfg: RolloutConfig,
        seeds: torch.Tensor,
        *,
        keep_logprobs: bool = True,
    ) -> Rollout: ...

    def push_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int) -> None: ...

    def close(self) -> None: ...
