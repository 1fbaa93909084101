"""Records → token ids, with one truncation policy for every task.

A sequence is `prompt_ids + response_ids`, where `prompt_ids = encode_prompt(...)` and
`response_ids = encode_response(...)` are tokenized separately so `prompt_length` is exact.

Truncation policy (stated once, used by every `encode_*`):

1. If `max_prompt_length` is set, a longer prompt keeps its *last* `max_prompt_length` tokens
   (the end of a dialogue is what the reply answers). A leading BOS is kept in place.
2. If prompt + response is still longer than `max_length`, the prompt is cut further from the
   left, but never below `min(prompt_length, max_length // 2)` tokens, so a long reply cannot push
   out all its context.
3. Whatever is still too long is cut from the right end of the response (which then has no EOS).

For pairs and ranked lists the longest reply sets the prompt cut, so every reply of a comparison
sees the same prompt (DPO and the reward model compare like with like). Every item records
whether it was truncated; each `encode_*` logs one warning with the count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlhfkit.data.chat import Template, check_chat_template, encode_prompt, encode_response
from rlhfkit.types import PreferencePair, PromptRecord, RankedList, SFTExample

log = logging.getLogger("rlhfkit.data")


@dataclass(frozen=True)
class EncodedSFT:
    """One demonstration: `input_ids = prompt_ids + response_ids`."""

    input_ids: list[int]
    prompt_length: int
    truncated: bool = False
    source: str = ""

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class EncodedPair:
    """One comparison; both sequences start with the same `prompt_length` prompt tokens."""

    chosen_ids: list[int]
    rejected_ids: list[int]
    prompt_length: int
    margin: float | None = None
    truncated: bool = False
    source: str = ""

    @property
    def length(self) -> int:
        """The longer of the two sequences (its padded cost is 2 × this)."""
        return max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass(frozen=True)
class EncodedRanked:
    """K sequences, best first, sharing `prompt_length` prompt tokens."""

    sequences: tuple[list[int], ...]
    prompt_length: int
    truncated: bool = False
    source: str = ""

    @property
    def length(self) -> int:
        """The longest sequence (its padded cost is K × this)."""
        return max(len(s) for s in self.sequences)


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt for generation: `input_ids` are the prompt ids (`prompt_length` of them)."""

    input_ids: list[int]
    prompt_length: int
    truncated: bool = False
    source: str = ""

    @property
    def length(self) -> int:
        return len(self.input_ids)


def truncate(
    prompt: list[int],
    responses: Sequence[list[int]],
    max_length: int,
    max_prompt_length: int | None = None,
    bos_id: int | None = None,
) -> tuple[list[int], list[list[int]], bool]:
    """Apply the module's truncation policy; return (prompt, responses, truncated)."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    longest = max((len(r) for r in responses), default=0)
    keep = len(prompt)
    if max_prompt_length is not None:
        keep = min(keep, max_prompt_length)
    if keep + longest > max_length:
        keep = min(keep, max(max_length - longest, min(len(prompt), max_length // 2)))
    new_prompt = _keep_end(prompt, keep, bos_id)
    budget = max_length - len(new_prompt)
    new_responses = [r[:budget] for r in responses]
    truncated = len(new_prompt) < len(prompt) or any(
        len(a) < len(b) for a, b in zip(new_responses, responses, strict=True)
    )
    return new_prompt, new_responses, truncated


def _keep_end(ids: list[int], keep: int, bos_id: int | None) -> list[int]:
    if keep >= len(ids):
        return list(ids)
    if keep <= 0:
        return []
    if bos_id is not None and ids and ids[0] == bos_id and keep >= 2:
        return [bos_id] + ids[len(ids) - keep + 1 :]  # the model expects its BOS first
    return ids[len(ids) - keep :]


def _warn(kind: str, items: Sequence[Any], limit: str) -> None:
    n = sum(item.truncated for item in items)
    if n:
        log.warning("%s: truncated %d of %d sequences to %s", kind, n, len(items), limit)


def encode_sft(
    tokenizer: Any,
    records: Sequence[SFTExample],
    max_length: int,
    max_prompt_length: int | None = None,
    template: Template = "chat",
) -> list[EncodedSFT]:
    """Tokenize demonstrations; see the module docstring for the truncation policy."""
    out = []
    for rec in records:
        p, (r,), cut = encode_replies(
            tokenizer, rec, [rec.response], max_length, max_prompt_length, template
        )
        out.append(EncodedSFT(p + r, len(p), cut, rec.source))
    _warn("encode_sft", out, f"max_length={max_length}")
    return out


def encode_pairs(
    tokenizer: Any,
    records: Sequence[PreferencePair],
    max_length: int,
    max_prompt_length: int | None = None,
    template: Template = "chat",
) -> list[EncodedPair]:
    """Tokenize preference pairs; chosen and rejected share the (same-cut) prompt."""
    out = []
    for rec in records:
        replies = [rec.chosen, rec.rejected]
        p, (c, r), cut = encode_replies(
            tokenizer, rec, replies, max_length, max_prompt_length, template
        )
        out.append(EncodedPair(p + c, p + r, len(p), rec.margin, cut, rec.source))
    _warn("encode_pairs", out, f"max_length={max_length}")
    return out


def encode_ranked(
    tokenizer: Any,
    records: Sequence[RankedList],
    max_length: int,
    max_prompt_length: int | None = None,
    template: Template = "chat",
) -> list[EncodedRanked]:
    """Tokenize ranked lists (best first); all K replies share the same-cut prompt."""
    out = []
    for rec in records:
        p, rs, cut = encode_replies(
            tokenizer, rec, rec.responses, max_length, max_prompt_length, template
        )
        out.append(EncodedRanked(tuple(p + r for r in rs), len(p), cut, rec.source))
    _warn("encode_ranked", out, f"max_length={max_length}")
    return out


def _prompt_ids(tokenizer: Any, rec: Any, template: Template) -> list[int]:
    """`encode_prompt` of a record's prompt; a prompt the template cannot take is reported with
    the record's file and line; a tokenizer that needs a chat template it lacks is one config
    error (`data.chat.check_chat_template`), raised before any row is read."""
    check_chat_template(tokenizer, template)
    try:
        return encode_prompt(tokenizer, rec.prompt, template)
    except ValueError as e:
        raise ValueError(f"{rec.source}: prompt: {e}") from None


def encode_replies(
    tokenizer: Any,
    rec: SFTExample | PreferencePair | RankedList | PromptRecord,
    replies: Sequence[str],
    max_length: int,
    max_prompt_length: int | None = None,
    template: Template = "chat",
) -> tuple[list[int], list[list[int]], bool]:
    """Prompt ids and reply ids of one record, truncated together; returns (prompt, replies,
    truncated). Each sequence the model sees is `prompt + reply`.

    The one encoder behind every `encode_*` above (the SFT, RM and DPO trainers) and behind
    `rollout.RetokenizingRewardModelScorer`, so a reward model with its own tokenizer scores a
    rollout on exactly the ids its trainer built for that (dialogue, reply): `encode_prompt`,
    `encode_response` (reply + end token), then the module's truncation policy with one prompt
    cut for all `replies` (set by the longest; BOS kept first).
    """
    return truncate(
        _prompt_ids(tokenizer, rec, template),
        [encode_response(tokenizer, text, template) for text in replies],
        max_length,
        max_prompt_length,
        tokenizer.bos_token_id,
    )


def encode_prompts(
    tokenizer: Any,
    records: Sequence[PromptRecord],
    max_prompt_length: int,
    template: Template = "chat",
) -> list[EncodedPrompt]:
    """Tokenize prompts for generation, keeping the last `max_prompt_length` tokens."""
    out = []
    bos = tokenizer.bos_token_id
    for rec in records:
        ids = _prompt_ids(tokenizer, rec, template)
        p = _keep_end(ids, max_prompt_length, bos)
        out.append(EncodedPrompt(p, len(p), len(p) < len(ids), rec.source))
    _warn("encode_prompts", out, f"max_prompt_length={max_prompt_length}")
    return out
