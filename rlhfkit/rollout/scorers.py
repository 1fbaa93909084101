"""Reward scorers: what turns (prompt, response) into the sequence score PPO optimises.

A `Scorer` is called as `scorer(prompts, responses, rollout) -> scores (B,) float32` with the
prompt and response texts and the token batch they came from; each implementation uses what it
needs. Three are provided:

1. `RewardModelScorer`: a reward model that shares the policy's tokenizer. It reads the token ids
   of the rollout directly (no decode/re-encode round trip, which can change token boundaries)
   and takes the head at the last valid token of prompt + response (the EOS when generated, the
   last token of a truncated response otherwise), never at a pad after it.
2. `RetokenizingRewardModelScorer`: a reward model with its own tokenizer: the texts are joined
   with the RM's prompt format and re-encoded (right padding; the score is read at the last valid
   token by mask, so the padding side does not matter).
3. `CallableScorer`: any Python function `f(prompts, responses) -> list[float]` (a rule, a
   simulated-world gold scorer, an external API), the flexibility TRL's `reward_funcs` offers.

Scores come back as a float32 (B,) tensor, their count checked against the batch; NaN/inf are
passed on for the trainer's `on_nan` policy (skip the batch or stop) to handle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from rlhfkit.models import ScalarModel
from rlhfkit.rollout.generate import Rollout

__all__ = [
    "CallableScorer",
    "RetokenizingRewardModelScorer",
    "RewardModelScorer",
    "Scorer",
    "as_scalar_model",
    "import_callable",
]


class Scorer(Protocol):
    def __call__(
        self, prompts: Sequence[str], responses: Sequence[str], rollout: Rollout
    ) -> torch.Tensor: ...


def as_scalar_model(model: Any) -> Any:
    """Anything with `score(input_ids, attention_mask)` as is; a HF sequence-classification
    model (a plain `GPT2ForSequenceClassification` folder, say) wrapped in `ScalarModel`."""
    if callable(getattr(model, "score", None)) and not isinstance(model.score, nn.Module):
        return model
    return ScalarModel(model)


def _checked(scores: torch.Tensor, n: int, who: str) -> torch.Tensor:
    scores = scores.detach().float().reshape(-1)
    if scores.numel() != n:
        raise ValueError(f"{who} returned {scores.numel()} scores for {n} responses")
    return scores


class RewardModelScorer:
    """A reward model on the policy's own token ids (same tokenizer)."""

    def __init__(self, reward_model: Any, batch_size: int = 64) -> None:
        self.reward_model = as_scalar_model(reward_model)
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(
        self, prompts: Sequence[str], responses: Sequence[str], rollout: Rollout
    ) -> torch.Tensor:
        input_ids, mask = rollout.input_ids, rollout.attention_mask
        if not bool(rollout.response_mask.any(dim=1).all()):
            raise ValueError("RewardModelScorer: a response has no valid token to score")
        parts = [
            self.reward_model.score(
                input_ids[i : i + self.batch_size], mask[i : i + self.batch_size]
            )
            for i in range(0, input_ids.shape[0], self.batch_size)
        ]
        return _checked(torch.cat(parts), input_ids.shape[0], "reward model")


class RetokenizingRewardModelScorer:
    """A reward model with its own tokenizer: decode, join as `prompt + response`, re-encode."""

    def __init__(
        self, reward_model: Any, tokenizer: Any, max_length: int = 1024, batch_size: int = 64
    ) -> None:
        self.reward_model = as_scalar_model(reward_model)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(
        self, prompts: Sequence[str], responses: Sequence[str], rollout: Rollout | None = None
    ) -> torch.Tensor:
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        device = next(iter(self.reward_model.parameters()), torch.empty(0)).device
        parts = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            )
            parts.append(
                self.reward_model.score(
                    enc["input_ids"].to(device), enc["attention_mask"].to(device)
                )
            )
        return _checked(torch.cat(parts), len(texts), "reward model (own tokenizer)")


class CallableScorer:
    """Wraps `fn(prompts, responses) -> sequence of floats` as a `Scorer`."""

    def __init__(
        self, fn: Callable[[list[str], list[str]], Sequence[float]], name: str = ""
    ) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def __call__(
        self, prompts: Sequence[str], responses: Sequence[str], rollout: Rollout | None = None
    ) -> torch.Tensor:
        values = self.fn(list(prompts), list(responses))
        scores = torch.as_tensor(list(values) if not torch.is_tensor(values) else values)
        return _checked(scores, len(prompts), f"reward function {self.name!r}")


def import_callable(spec: str) -> Callable[..., Any]:
    """`"package.module:function"` → the function (for `reward_fn` named in a config file)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reward function {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"reward function {spec!r}: cannot import {module_name!r} ({e})") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"reward function {spec!r}: {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise ValueError(f"reward function {spec!r} is not callable")
    return fn
