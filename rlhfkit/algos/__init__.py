"""rlhfkit.algos: one package per training algorithm, each `config` + `train(cfg) -> result`.

`sft` (stage 1, supervised fine-tuning), `rm` (stage 2, reward model), `ppo` (stage 3, PPO and
PPO-Max), and the alternatives beyond PPO. Algorithms never import each other: what two share
lives a layer below (`core`, `data`, `models`, `rollout`, `engine`).
"""
