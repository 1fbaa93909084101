"""rlhfkit.rollout: what every online algorithm and the evaluation share — prompts, sampling,
scoring, the `Experience` record, in-loop evaluation and monitors.

- `PromptSource` / `read_prompt_source` / `PromptDataConfig`: prompts read, formatted and encoded
  through one path (`data.encode_prompts`), dealt in seeded shuffled passes, G samples each.
- `generate(policy, prompt_ids, prompt_mask, cfg, generator, eos_token_id=, pad_token_id=)`
  → `Rollout` (KV-cached batched sampling, responses cut after the first EOS, sampling log-probs;
  `generator`: a torch.Generator or per-row seeds from `row_seeds`).
- `collect(models, source, index, generator, cfg, group_size=G)` → `Collected`: the rollout
  step (sample, decode once, `make_experience`); `collect_sharded(..., key, cfg, acc)`: the same
  split over `accelerate launch` processes and gathered, rows seeded by their global number.
- `make_experience(...)` → `Experience` (old log-probs; reference log-probs and critic values only
  when needed; reward total and components).
- Rewards: `Reward` (weighted sum), `RewardModelScorer` (same tokenizer, reuses ids),
  `RetokenizingRewardModelScorer` (own tokenizer and template), `CallableScorer` (any Python
  function; its failures are `RewardError`s), `RewardSpec` + `build_reward` (from a config;
  `check_rewards` before a run starts).
- Pairwise LLM judges (`llm_judge`): `LocalLMJudge`, `OpenAIJudge`, `JudgeConfig` +
  `check_judge` / `build_judge`, `ask_both_orders` → `Judgment`s (used by `rlhfkit eval` and
  by online DPO's labelling).
- `evaluate_online`: in-loop evaluation on held-out prompts (reward, KL, length, judges).
- Monitors: `rollout_metrics`, `CollapseMonitor`, `ConsoleThrottle`, `explained_variance`,
  `repetition_fraction`.
- `sample_batches`: sampled replies as text, batch by batch (evaluation, feedback collection).
- Rollout engines (`engines/`, docs/rollout.md): `RolloutEngine` (generate / push_weights /
  close), `LocalEngine` (the sampler above, the default), `build_engine` (local, vllm,
  vllm_server from `rollout.engine`), `sync_weights` / `policy_weights` (the per-iteration push),
  `EngineError`.
- `response_logprobs`: the policy forward that applies the LM head only at response positions.
"""

from rlhfkit.rollout.collect import Collected, OnlineModels, collect, collect_sharded
from rlhfkit.rollout.engines.base import EngineError, RolloutEngine
from rlhfkit.rollout.engines.build import build_engine
from rlhfkit.rollout.engines.config import VLLMConfig
from rlhfkit.rollout.engines.local import LocalEngine
from rlhfkit.rollout.engines.weights import policy_weights, sync_weights
from rlhfkit.rollout.evaluate import Judge, evaluate_online
from rlhfkit.rollout.experience import (
    Experience,
    cat_experiences,
    episode_returns,
    make_experience,
    reference_context,
    with_turn_rewards,
)
from rlhfkit.rollout.forward import (
    causal_lm_parts,
    lm_head_logprobs,
    next_token_logprobs,
    response_logprobs,
    trim_padding,
)
from rlhfkit.rollout.generate import Rollout, RolloutConfig, as_seeds, generate, row_seeds
from rlhfkit.rollout.llm_judge import (
    JudgeConfig,
    Judgment,
    LocalLMJudge,
    OpenAIJudge,
    ask_both_orders,
    build_judge,
    check_judge,
)
from rlhfkit.rollout.monitor import (
    CollapseMonitor,
    ConsoleThrottle,
    ended_at,
    explained_variance,
    repetition_fraction,
    rollout_metrics,
)
from rlhfkit.rollout.prompts import (
    PromptDataConfig,
    PromptSource,
    prompt_source,
    read_prompt_source,
)
from rlhfkit.rollout.rewards import RewardSpec, build_reward, check_rewards
from rlhfkit.rollout.scorers import (
    CallableScorer,
    RetokenizingRewardModelScorer,
    Reward,
    RewardError,
    RewardModelScorer,
    Scorer,
    as_scalar_model,
    import_callable,
)
from rlhfkit.rollout.texts import decode_responses, sample_batches

__all__ = [
    "JudgeConfig",
    "Judgment",
    "LocalLMJudge",
    "OpenAIJudge",
    "ask_both_orders",
    "build_judge",
    "check_judge",
    "EngineError",
    "LocalEngine",
    "RolloutEngine",
    "VLLMConfig",
    "as_seeds",
    "build_engine",
    "policy_weights",
    "sync_weights",
    "CallableScorer",
    "CollapseMonitor",
    "Collected",
    "ConsoleThrottle",
    "Experience",
    "Judge",
    "OnlineModels",
    "PromptDataConfig",
    "PromptSource",
    "RetokenizingRewardModelScorer",
    "Reward",
    "RewardError",
    "RewardModelScorer",
    "RewardSpec",
    "Rollout",
    "RolloutConfig",
    "Scorer",
    "as_scalar_model",
    "build_reward",
    "check_rewards",
    "cat_experiences",
    "episode_returns",
    "with_turn_rewards",
    "causal_lm_parts",
    "lm_head_logprobs",
    "next_token_logprobs",
    "collect",
    "collect_sharded",
    "decode_responses",
    "evaluate_online",
    "explained_variance",
    "generate",
    "import_callable",
    "make_experience",
    "prompt_source",
    "read_prompt_source",
    "reference_context",
    "repetition_fraction",
    "response_logprobs",
    "rollout_metrics",
    "ended_at",
    "row_seeds",
    "sample_batches",
    "trim_padding",
]
