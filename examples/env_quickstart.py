"""docs/env.md's example: an environment in a few lines, run by the multi-turn driver."""

import torch

from rlhfkit.env import EpisodeConfig, StepResult, record_messages, run_episodes
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.rollout import LocalEngine, RolloutConfig
from rlhfkit.sim import train_tokenizer
from rlhfkit.types import PromptRecord, user


class AskAgain:
    """The user repeats the question until the reply says "yes" (reward 1), −0.1 a turn."""

    def reset(self, record):
        return record_messages(record)

    def step(self, message):
        if "yes" in message["content"]:
            return StepResult([], reward=1.0, done=True)
        return StepResult([{"role": "user", "content": "Say yes."}], reward=-0.1)


tok = train_tokenizer(["Say yes. yes no maybe."] * 20, vocab_size=300, min_frequency=1)
policy = build_tiny_model("gpt2", "nano", tokenizer=tok)  # random: replies run to the budget
prompts = [PromptRecord(user("Say yes."))] * 4
episodes = run_episodes(LocalEngine(policy, tok), tok, AskAgain, prompts, torch.arange(4),
                        RolloutConfig(max_new_tokens=8), EpisodeConfig(max_turns=3))  # fmt: skip
for ep in episodes:
    print(ep.end, ep.turns, round(ep.reward, 2), f"{sum(ep.action)}/{len(ep.ids)} policy tokens")
