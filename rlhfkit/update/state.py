"""What an online run holds besides its models, and what it returns.

`OnlineState` is everything a checkpoint must store beyond Accelerate's `save_state` (models,
optimisers, schedulers, RNG states): the iteration, the prompt position, the mini-batch / ptx
generators (sampling needs none: row i of iteration k is seeded from (seed, k, i)), the KL
controller, running reward moments and the collapse monitor's history. `state_dict` /
`load_state_dict` make resume exact (tested per trainer). `OnlineResult` is what `train` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from rlhfkit.core import AdaptiveKLController, FixedKLController, RunningMoments
from rlhfkit.rollout import CollapseMonitor, ConsoleThrottle, PromptSource
from rlhfkit.update.config import OnlineConfig

if TYPE_CHECKING:
    from rlhfkit.engine import Engine

__all__ = ["OnlineResult", "OnlineState", "RunStatus"]

# completed | stopped (stop_after) | stopped_on_nan (the last good checkpoint is kept)
RunStatus = Literal["completed", "stopped", "stopped_on_nan"]


@dataclass
class OnlineState:
    prompts: PromptSource
    kl_ctl: FixedKLController | AdaptiveKLController
    shuffle_gen: torch.Generator
    ptx_gen: torch.Generator
    reward_moments: RunningMoments = field(default_factory=RunningMoments)
    monitor: CollapseMonitor = field(default_factory=CollapseMonitor)
    throttle: ConsoleThrottle = field(default_factory=ConsoleThrottle)  # console only
    iteration: int = 0  # the last iteration whose effects are in the models and this state
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # console only: batches skipped, why

    @classmethod
    def new(cls, cfg: OnlineConfig, prompts: PromptSource) -> OnlineState:
        seed = cfg.engine.seed
        kl_ctl = (
            AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if cfg.kl_control == "adaptive"
            else FixedKLController(cfg.kl_coef)
        )
        return cls(
            prompts=prompts,
            kl_ctl=kl_ctl,
            shuffle_gen=torch.Generator().manual_seed(seed + 2),
            ptx_gen=torch.Generator().manual_seed(seed + 3),
            monitor=CollapseMonitor(window=cfg.collapse_window),
        )

    @classmethod
    def resumed(cls, cfg: OnlineConfig, prompts: PromptSource, engine: Engine) -> OnlineState:
        """A new state, or the one in the latest checkpoint when the engine resumes from one
        (`engine.resume` also restores the models, optimisers and RNG states)."""
        state = cls.new(cfg, prompts)
        saved = engine.resume()
        if saved:
            state.load_state_dict(saved)
        return state

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "prompts": self.prompts.state_dict(),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "ptx_gen": self.ptx_gen.get_state(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "reward_moments": self.reward_moments.state_dict(),
            "monitor": self.monitor.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        self.prompts.load_state_dict(state["prompts"])
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.ptx_gen.set_state(state["ptx_gen"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.reward_moments.load_state_dict(state["reward_moments"])
        self.monitor.load_state_dict(state["monitor"])


@dataclass
class OnlineResult:
    policy_path: Any  # Path: the trained policy, a HF folder with its tokenizer (RUN/policy)
    run_dir: Any  # Path
    metrics: dict[str, float]  # the last iteration's metrics and the final evaluation
    status: RunStatus = "completed"
    iterations_done: int = 0
    warnings: list[str] = field(default_factory=list)
