"""Reward scorers: what turns (prompt, response) into the sequence score PPO optimises.

A `Scorer` is called as `scorer(prompts, responses, rollout, records) -> scores (B,) float32` with
the prompt texts (as the policy saw them), the reply texts, the token batch they came from and the
prompts' `PromptRecord`s (dialogue and metadata, e.g. a reference answer); each implementation
uses what it needs. Three are provided, and `Reward` sums several with weights:

1. `RewardModelScorer`: a reward model that shares the policy's tokenizer. It reads the token ids
   of the rollout directly (no decode/re-encode round trip, which can change token boundaries)
   and takes the head at the last valid token of prompt + response (the end token when
   generated: EOS, or the chat template's end-of-turn such as `<|im_end|>`; the last token of a
   truncated response otherwise), never at a pad after it.
2. `RetokenizingRewardModelScorer`: a reward model with its own tokenizer. Each (dialogue,
   reply) is encoded by `data.encode_replies`, the function the RM trainer's pairs go through
   (the RM's own chat template or HH format; the reply + the RM tokenizer's end token,
   `data.end_token_id`, where an rlhfkit RM is trained to score; the same truncation, BOS kept),
   right-padded; the score is read at the last valid token by mask.
3. `CallableScorer`: any Python function `f(prompts, responses)` or
   `f(prompts, responses, records)` returning one float per reply (a rule, the simulated world's
   gold scorer, an exact-match check against `record.meta`, an external API).
4. `Reward`: Σ_k w_k · scorer_k, each component kept for logging (`reward/<name>`), as TRL's
   `reward_funcs` + `reward_weights`.

Scores come back as a float32 (B,) tensor, their count checked against the batch; NaN/inf are
passed on for the trainer's `on_nan` policy (skip the batch or stop) to handle. A reward function
that raises or returns something other than one number per reply is a `RewardError` naming the
function and the problem; inside a `Reward` that component's scores become NaN and the failure
is kept in `Reward.failures` for the trainer's `on_reward_error` policy
(`update.OnlineLoop.check_rollout`): every process then sees the same NaN rows after gathering,
so no process waits on one that raised. `import_callable` checks a 'package.module:function'
path before a run starts (`ConfigError` naming the config key).
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from rlhfkit.config import ConfigError
from rlhfkit.errors import UserError
from rlhfkit.models import ScalarModel
from rlhfkit.rollout.forward import can_share_prompts
from rlhfkit.rollout.generate import Rollout
from rlhfkit.types import PromptRecord

__all__ = [
    "CallableScorer",
    "RetokenizingRewardModelScorer",
    "Reward",
    "RewardError",
    "RewardModelScorer",
    "Scorer",
    "as_scalar_model",
    "import_callable",
]


class Scorer(Protocol):
    def __call__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        rollout: Rollout,
        records: Sequence[PromptRecord],
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
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        rollout: Rollout,
        records: Sequence[PromptRecord] = (),
    ) -> torch.Tensor:
        input_ids, mask = rollout.input_ids, rollout.attention_mask
        if not bool(rollout.response_mask.any(dim=1).all()):
            raise ValueError("RewardModelScorer: a response has no valid token to score")
        rm = self.reward_model
        # rows that share a prompt share its forward (rollout.forward, point 6)
        share = {"prompt_len": rollout.prompt_len} if _shares_prompts(rm) else {}
        parts = [
            rm.score(input_ids[i : i + self.batch_size], mask[i : i + self.batch_size], **share)
            for i in range(0, input_ids.shape[0], self.batch_size)
        ]
        return _checked(torch.cat(parts), input_ids.shape[0], "reward model")


def _shares_prompts(model: Any) -> bool:
    return isinstance(model, ScalarModel) and can_share_prompts(model.body)


class RetokenizingRewardModelScorer:
    """A reward model with its own tokenizer: each (dialogue, reply) encoded by
    `data.encode_replies`, the function the RM trainer's `data.encode_pairs` calls (its template;
    reply + end token; the same truncation to `max_length` / `max_prompt_length`: BOS kept, the
    prompt cut from the left, a reply too long for what remains cut at its end). Give the
    `max_length` and `max_prompt_length` the RM was trained with: the ids are then those of the
    reply as the chosen side of a training pair (when it is the pair's longer reply)."""

    def __init__(
        self,
        reward_model: Any,
        tokenizer: Any,
        max_length: int = 1024,
        batch_size: int = 64,
        template: Literal["chat", "raw"] = "chat",
        max_prompt_length: int | None = None,
    ) -> None:
        from rlhfkit.data import ensure_pad_token

        self.reward_model = as_scalar_model(reward_model)
        self.tokenizer = tokenizer
        self.pad_id = ensure_pad_token(tokenizer)
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.batch_size = batch_size
        self.template = template

    def encode(self, record: PromptRecord, response: str) -> list[int]:
        """prompt + reply ids of one (dialogue, reply), as the RM trainer encodes them."""
        from rlhfkit.data import encode_replies

        prompt, (reply,), _ = encode_replies(
            self.tokenizer,
            record,
            [response],
            self.max_length,
            self.max_prompt_length,
            self.template,
        )
        return prompt + reply

    @torch.inference_mode()
    def __call__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        rollout: Rollout | None = None,
        records: Sequence[PromptRecord] = (),
    ) -> torch.Tensor:
        if len(records) != len(responses):
            raise ValueError("RetokenizingRewardModelScorer needs the prompt records")
        device = next(iter(self.reward_model.parameters()), torch.empty(0)).device
        encoded = [self.encode(rec, r) for rec, r in zip(records, responses, strict=True)]
        parts = []
        for i in range(0, len(encoded), self.batch_size):
            chunk = encoded[i : i + self.batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, x in enumerate(chunk):
                ids[row, : len(x)] = torch.tensor(x)
                mask[row, : len(x)] = 1
            parts.append(self.reward_model.score(ids.to(device), mask.to(device)))
        return _checked(torch.cat(parts), len(encoded), "reward model (own tokenizer)")


class RewardError(UserError, ValueError):
    """A reward function that raised or returned something other than one number per reply;
    the message names the function and what went wrong."""

    kind = "reward error"


def _line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace runs collapsed), at most `limit` chars."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _takes_records(fn: Callable[..., Any]) -> bool:
    """Whether `fn` can be called as fn(prompts, responses, records)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _floats(values: Any, n: int) -> torch.Tensor:
    """`values` as a (n,) float32 tensor, or a ValueError saying in words why it is not one
    number per reply (a string, None, nested lists, the wrong count)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"returned {type(values).__name__}, not a list of {n} numbers")
    if torch.is_tensor(values):
        scores = values.detach().float().reshape(-1)
    else:
        items = list(values)
        bad = [x for x in items if isinstance(x, bool) or not isinstance(x, numbers.Real)]
        bad = [x for x in bad if not (torch.is_tensor(x) and x.numel() == 1)]
        if bad:
            raise ValueError(
                f"returned {type(bad[0]).__name__} values (e.g. {bad[0]!r:.40}), not numbers"
            )
        scores = torch.tensor([float(x) for x in items], dtype=torch.float32)
    if scores.numel() != n:
        raise ValueError(f"returned {scores.numel()} scores for {n} replies")
    return scores


class CallableScorer:
    """Wraps `fn(prompts, responses[, records]) -> sequence of floats` as a `Scorer`. A call
    that raises or returns anything but one number per reply (a string, None, a bool, the wrong
    count) is a `RewardError` naming the function; NaN/inf are passed on."""

    def __init__(self, fn: Callable[..., Sequence[float]], name: str = "") -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.takes_records = _takes_records(fn)

    def __call__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        rollout: Rollout | None = None,
        records: Sequence[PromptRecord] = (),
    ) -> torch.Tensor:
        args = [list(prompts), list(responses)]
        if self.takes_records:
            args.append(list(records))
        try:
            values = self.fn(*args)
        except Exception as e:  # the user's code: any failure is reported, not a traceback
            raise RewardError(
                f"reward function {self.name!r} raised {type(e).__name__}: {_line(e)}"
            ) from e
        try:
            return _floats(values, len(prompts))
        except ValueError as e:
            raise RewardError(f"reward function {self.name!r} {e}") from None


class Reward:
    """Σ_k weight_k · scorer_k(...), with each component's (unweighted) scores kept.

    `parts` is a list of (name, scorer, weight). Calling it returns (total (B,), {name: (B,)}).
    A component that fails with a `RewardError` gives NaN scores and its message is appended to
    `failures` (the trainer reports and clears them: `update.OnlineLoop.check_rollout`).
    """

    def __init__(self, parts: Sequence[tuple[str, Scorer, float]]) -> None:
        if not parts:
            raise ValueError("Reward: give at least one scorer")
        names = [name for name, _, _ in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"Reward: component names must differ, got {names}")
        self.parts = list(parts)
        self.failures: list[str] = []

    def __call__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        rollout: Rollout,
        records: Sequence[PromptRecord],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        components = {}
        for name, scorer, _ in self.parts:
            try:
                components[name] = scorer(prompts, responses, rollout, records).float().cpu()
            except RewardError as e:
                self.failures.append(str(e))
                components[name] = torch.full((len(responses),), math.nan)
        total = sum(w * components[name] for name, _, w in self.parts)
        return total, components

    def take_failures(self) -> list[str]:
        """The failures since the last call of this method (and forget them)."""
        failures, self.failures = self.failures, []
        return failures


def _module_hint(module_name: str) -> str:
    """Why a module that is not found may be missing, when the reason is a common one."""
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        return "; give a module name (package.module), not a file path"
    top = module_name.split(".")[0]
    here = Path.cwd()
    beside = (here / f"{top}.py").exists() or (here / top).is_dir()
    if beside and str(here) not in sys.path and "" not in sys.path:
        return f"; {top!r} is in the current folder, which is not on the path: set PYTHONPATH=."
    return ""


def import_callable(
    spec: str, key: str = "reward_fn", arities: tuple[int, ...] | None = (2, 3)
) -> Callable[..., Any]:
    """`"package.module:function"` → the function (for `reward_fn` named in a config file).

    Every way the path can be wrong is one `ConfigError` naming `key` (the config key that
    holds it): empty, no ':function', a module that does not import (not found, or its own
    error), a missing attribute, something not callable, or — for a reward function — one that
    cannot be called as f(prompts, responses[, records]) (`arities`; None: any signature, e.g.
    an environment factory)."""
    where = f"{key}={spec!r}"
    spec = spec.strip()
    module_name, sep, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not spec:
        raise ConfigError(f"{key} is empty: give 'package.module:function'")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{where}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):  # the module itself, not one it imports
            hint = _module_hint(module_name)
            raise ConfigError(f"{where}: no module named {module_name!r}{hint}") from None
        raise ConfigError(f"{where}: cannot import {module_name!r} ({e})") from None
    except Exception as e:  # the module's own code failed (SyntaxError, NameError, ...)
        raise ConfigError(
            f"{where}: importing {module_name!r} failed: {type(e).__name__}: {_line(e)}"
        ) from None
    fn: Any = module
    missing = object()
    for part in attr.split("."):
        fn = getattr(fn, part, missing)
        if fn is missing:
            raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"{where}: {attr!r} is a {type(fn).__name__}, not a function")
    if arities is None:
        return fn
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: called as they are
        return fn
    for n_args in arities:
        try:
            signature.bind(*range(n_args))
            return fn
        except TypeError:
            continue
    raise ConfigError(
        f"{where}: {attr}{signature} cannot be called as f(prompts, responses) or "
        "f(prompts, responses, records)"
    )
