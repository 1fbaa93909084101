"""rlhfkit.update: what every online algorithm does after a rollout — the policy step (PPO-Clip
with clip-higher and dual clip, PPO-Penalty, the plain REINFORCE surrogate; entropy bonus, KL
loss, ptx: `policy`), the critic step (`critic`), the shared `OnlineConfig` (`config`); what an
online trainer reads and loads before its loop (`data`), the run state a checkpoint stores and
the result (`state`), the loop's shared steps (`loop`), the rollout engine and its importance
correction (`sampling`); the pair log-probs and reference of the preference trainers (DPO, KTO,
online DPO: `pairs`, `reference`). Accumulation and the optimiser step are
`rlhfkit.engine.steps`."""

from rlhfkit.update.config import OnlineConfig, UpdateLossMode
from rlhfkit.update.critic import critic_step
from rlhfkit.update.data import (
    OnlineData,
    OnlineInputs,
    build_online_reward,
    check_model_sources,
    check_shardable,
    freeze,
    load_policies,
    next_ptx,
    read_online_data,
    read_online_inputs,
)
from rlhfkit.update.loop import (
    OnlineLoop,
    OnlineRun,
    RolloutVerdict,
    evaluate_held_out,
    finite,
    minibatch_epochs,
    timing_metrics,
)
from rlhfkit.update.pairs import collate, pair_logps, pair_loss, pair_metrics
from rlhfkit.update.policy import (
    PolicyObjective,
    build_objective,
    policy_step,
    ptx_loss,
    split_rows,
    step_totals,
)
from rlhfkit.update.sampling import Correction, build_correction, build_sampler, push_policy
from rlhfkit.update.state import OnlineResult, OnlineState, RunStatus

__all__ = [
    "Correction",
    "OnlineConfig",
    "OnlineData",
    "OnlineInputs",
    "OnlineLoop",
    "OnlineRun",
    "OnlineResult",
    "OnlineState",
    "PolicyObjective",
    "RolloutVerdict",
    "RunStatus",
    "UpdateLossMode",
    "build_correction",
    "build_objective",
    "build_online_reward",
    "build_sampler",
    "check_model_sources",
    "check_shardable",
    "collate",
    "critic_step",
    "evaluate_held_out",
    "finite",
    "freeze",
    "load_policies",
    "minibatch_epochs",
    "next_ptx",
    "pair_logps",
    "pair_loss",
    "pair_metrics",
    "policy_step",
    "ptx_loss",
    "push_policy",
    "read_online_data",
    "read_online_inputs",
    "split_rows",
    "step_totals",
    "timing_metrics",
]
