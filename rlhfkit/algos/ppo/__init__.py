"""Stage 3: PPO against a reward model, with the PPO-Max recipe as flags (`rlhfkit ppo`).

`train(cfg, judges=None, reward_fn=None) -> PPOResult`; `PPOConfig` (presets: `ppo_max`,
`ppo_sim`). See `trainer` for the implementation details and their sources.
"""

from rlhfkit.algos.ppo.config import PPOConfig, PPODataConfig
from rlhfkit.algos.ppo.trainer import PPOResult, train

__all__ = ["PPOConfig", "PPODataConfig", "PPOResult", "train"]
