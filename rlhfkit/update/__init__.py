"""rlhfkit.update: what every online algorithm does after a rollout — the policy step (PPO-Clip
with clip-higher and dual clip, PPO-Penalty, the plain REINFORCE surrogate; entropy bonus, KL
loss, ptx), the critic step, the shared `OnlineConfig`, and the run state that a checkpoint
stores; the pair log-probs and reference of the preference trainers (DPO, KTO, online DPO:
`pairs`, `reference`). Accumulation and the optimiser step are `rlhfkit.engine.steps`."""

from rlhfkit.update.config import OnlineConfig, UpdateLossMode
from rlhfkit.update.critic import critic_step
from rlhfkit.update.pairs import collate, pair_logps, pair_loss, pair_metrics
from rlhfkit.update.policy import (
    PolicyObjective,
    build_objective,
    policy_step,
    ptx_loss,
    split_rows,
    step_totals,
)
from rlhfkit.update.run import (
    OnlineData,
    OnlineResult,
    OnlineState,
    check_model_sources,
    check_shardable,
    end_iteration,
    end_run,
    evaluate_held_out,
    finite,
    freeze,
    load_policies,
    minibatch_epochs,
    next_ptx,
    read_online_data,
    rollout_is_bad,
    timing_metrics,
)
from rlhfkit.update.sampling import Correction, build_correction, build_sampler, push_policy

__all__ = [
    "Correction",
    "OnlineConfig",
    "OnlineData",
    "OnlineResult",
    "OnlineState",
    "PolicyObjective",
    "UpdateLossMode",
    "build_correction",
    "build_objective",
    "build_sampler",
    "push_policy",
    "collate",
    "pair_logps",
    "pair_loss",
    "pair_metrics",
    "end_iteration",
    "end_run",
    "evaluate_held_out",
    "finite",
    "critic_step",
    "freeze",
    "load_policies",
    "check_shardable",
    "minibatch_epochs",
    "next_ptx",
    "policy_step",
    "ptx_loss",
    "read_online_data",
    "check_model_sources",
    "rollout_is_bad",
    "timing_metrics",
    "split_rows",
    "step_totals",
]
