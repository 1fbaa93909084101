"""rlhfkit.env: multi-turn, tool-using and simulated-user rollouts for every online trainer
(docs/env.md).

- `Environment` (`reset(record) -> messages`, `step(message) -> StepResult`), `StepResult`,
  `EpisodeConfig` (turn cap, token budget, error rate), `EnvError`.
- Tools: `tool_schema` (JSON schema from a function's signature and docstring), the parsers
  `HermesParser` (`<tool_call>{json}</tool_call>`) and `SimpleParser` (`name(argument)`),
  `ToolEnvironment` (runs the calls, answers with tool messages, scores the final answer).
- The driver: `run_episodes` (batched turns through the rollout engine, token in / token out,
  chat-template deltas, limits, faults) → `Episode` records; `episodes_rollout` (their tensors).
- On the trainers' path: `build_env` (config keys `env`, `env_args`, `episode`),
  `EnvRollout.collect` (`rollout.collect`'s signature), `episode_metrics`, `evaluate_env`.
- Shipped environments: `rlhfkit.env.shipped` (simulated user, calculator, guessing game).
"""

from rlhfkit.env.base import EnvError, Environment, EpisodeConfig, StepResult, record_messages
from rlhfkit.env.collect import EnvRollout, build_env, episode_metrics, evaluate_env, mean_ci
from rlhfkit.env.driver import (
    Episode,
    check_episode,
    env_delta,
    episodes_rollout,
    render_ids,
    run_episodes,
)
from rlhfkit.env.tools import (
    HermesParser,
    ParseError,
    SimpleParser,
    ToolCall,
    ToolEnvironment,
    tool_schema,
)

__all__ = [
    "EnvError",
    "EnvRollout",
    "Environment",
    "Episode",
    "EpisodeConfig",
    "HermesParser",
    "ParseError",
    "SimpleParser",
    "StepResult",
    "ToolCall",
    "ToolEnvironment",
    "build_env",
    "check_episode",
    "env_delta",
    "episode_metrics",
    "episodes_rollout",
    "evaluate_env",
    "mean_ci",
    "record_messages",
    "render_ids",
    "run_episodes",
    "tool_schema",
]
