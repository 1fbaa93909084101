"""The environment interface: what a multi-turn rollout talks to.

    env = Factory(**env_args)                 # one object per episode (it may hold state)
    messages = env.reset(record)              # the opening turns, ending where the policy speaks
    result = env.step({"role": "assistant", "content": reply})
    result.messages, result.reward, result.done, result.info

Messages are chat-template dicts (`{"role", "content"}`). An environment may list `tools`
(JSON schemas, `env.tools.tool_schema`) that the chat template renders (`tools=`), and a
`tool_role` for its tool replies. The driver (`env.driver`) samples the policy's turns, calls
`step` with each reply, tokenises what comes back as the delta of the chat template, and ends
the episode when `done`, at the turn cap, at the token budget or when the environment raises.

The shape is the one the frameworks converge on (SkyRL-gym `Env.init/step`, OpenRLHF
`AgentInstanceBase.reset/step`, TRL `environment_factory`); the names here are rlhfkit's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import Field

from rlhfkit.config import ConfigBase
from rlhfkit.errors import UserError
from rlhfkit.types import PromptRecord

__all__ = ["EnvError", "EpisodeConfig", "Environment", "StepResult", "record_messages"]


class EnvError(UserError):
    """An environment that cannot be had (factory path) or failed too often (error rate)."""

    kind = "environment error"


@dataclass
class StepResult:
    """What an environment answers to one policy turn: its new messages (tool replies, the
    user's next turn; empty when done), the turn's reward, whether the episode is over, and
    anything worth counting (`tool_calls`, `invalid_calls`, `success`)."""

    messages: list[dict[str, str]] = field(default_factory=list)
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class Environment(Protocol):
    def reset(self, record: PromptRecord) -> list[dict[str, str]]: ...

    def step(self, message: dict[str, str]) -> StepResult: ...


def record_messages(record: PromptRecord) -> list[dict[str, str]]:
    """A prompt record's dialogue as chat-template messages (what most `reset`s return)."""
    return [{"role": m.role, "content": m.content} for m in record.prompt]


class EpisodeConfig(ConfigBase):
    """How the multi-turn driver runs episodes (`env.driver.run_episodes`)."""

    max_turns: int = Field(4, ge=1)
    """Policy turns per episode; an environment that has not said done by then is cut off
    (counted in `env/truncated`)."""
    max_tokens: int = Field(256, ge=2)
    """Token budget of a whole episode (opening turns + every reply + every environment
    message); what would overflow is cut and the episode ends (counted)."""
    truncation_penalty: float = Field(0.0, ge=0.0)
    """Subtracted from a truncated episode's last reward (turn cap, token budget, a reply that
    never ended): with a cost per turn, ending an episode early by rambling must not pay."""
    mask_truncated: bool = False
    """Drop a truncated episode's tokens from the loss (action mask all 0: DAPO's overlong
    filtering, Yu et al. 2025 §3.4); false: learn from it with the rewards it earned."""
    max_error_rate: float = Field(0.5, ge=0.0, le=1.0)
    """Stop the run (one line) when more than this share of a rollout's episodes ended because
    the environment or a tool raised; below it the episode ends, is counted (`env/errors`) and
    the run goes on."""
    rollout_fn: str | None = None
    """Escape hatch: 'package.module:function' run instead of the driver, with
    `run_episodes`'s arguments, returning the same `Episode` records (docs/env.md)."""
    template_check: Literal["first", "every", "off"] = "first"
    """Check the incremental token ids against a full re-render of the conversation: on the
    first episode of each rollout, on every episode, or never."""
