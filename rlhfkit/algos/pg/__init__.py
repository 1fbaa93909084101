"""The critic-free policy-gradient family: GRPO, Dr. GRPO, the DAPO switches, RLOO and
REINFORCE++ (`rlhfkit grpo|rloo|reinforce`, one trainer with an `advantage:` key).

`train(cfg, judges=None, reward_fn=None) -> PGResult`; `PGConfig` (presets `grpo_sim`,
`dr_grpo_sim`, `dapo_sim`, `rloo_sim`, `reinforce_sim`; `grpo_gpu`, `rloo_gpu`, `reinforce_gpu`
for a real model on a GPU).
See `trainer` for the implementation details and their sources.
"""

from rlhfkit.algos.pg.config import PGConfig
from rlhfkit.algos.pg.trainer import ADVANTAGES, PGResult, advantages, setup, train

__all__ = ["ADVANTAGES", "PGConfig", "PGResult", "advantages", "setup", "train"]
