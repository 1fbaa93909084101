"""rlhfkit: reinforcement learning from human feedback, readable and fast.

Layers (imports go one way, top to bottom):
    core      torch-only RL math (GAE, KL, losses, statistics)
    types     record types shared by every stage
    data / sim / models / rollout / engine
    algos     sft, rm, ppo, dpo, grpo, ... (never import each other)
    eval      judges, metrics, report
    cli       the `rlhfkit` command
"""

__version__ = "0.1.0"
