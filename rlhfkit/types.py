"""Record types shared by every stage: what readers yield and trainers consume.

A prompt is always a dialogue: a tuple of `Message`s ending with a user turn. Plain
prompt/response data becomes a one-message dialogue. Responses are plain strings (the final
assistant turn). `source` says where a record came from ("file.jsonl:17") so that any later error
can point back at the row; `meta` carries optional extras (the simulated world stores the prompt
family and the ideal answer there, for evaluation only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


Dialogue = tuple[Message, ...]


def user(text: str) -> Dialogue:
    """A one-turn dialogue: the common case of a plain prompt."""
    return (Message("user", text),)


@dataclass(frozen=True)
class SFTExample:
    """A demonstration: the dialogue so far and the assistant reply to imitate."""

    prompt: Dialogue
    response: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: `chosen` was preferred to `rejected` as the reply to `prompt`.

    `margin` is an optional strength of preference (e.g. an annotator's confidence, SHP's score
    ratio), used by the margin variant of the pairwise loss.
    """

    prompt: Dialogue
    chosen: str
    rejected: str
    margin: float | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class RankedList:
    """K replies to one prompt in preference order, best first (K >= 2)."""

    prompt: Dialogue
    responses: tuple[str, ...]
    scores: tuple[float, ...] | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def pairs(self) -> list[PreferencePair]:
        """The K·(K−1)/2 pairs (i better than j for every i < j)."""
        out = []
        k = len(self.responses)
        for i in range(k):
            for j in range(i + 1, k):
                out.append(
                    PreferencePair(
                        self.prompt,
                        self.responses[i],
                        self.responses[j],
                        source=self.source,
                        meta=self.meta,
                    )
                )
        return out


@dataclass(frozen=True)
class UnpairedExample:
    """One reply judged on its own: desirable (`label` True: thumbs up, a high rating) or not.
    TRL's unpaired preference format (`prompt`, `completion`, `label`), what KTO trains on."""

    prompt: Dialogue
    completion: str
    label: bool
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class PromptRecord:
    """A prompt for RL (PPO / GRPO / best-of-N) or evaluation."""

    prompt: Dialogue
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
