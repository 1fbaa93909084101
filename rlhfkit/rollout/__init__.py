"""rlhfkit.rollout: sampling from a policy and scoring what it sampled.

- `generate(policy, prompt_ids, prompt_mask, cfg, generator, eos_token_id=, pad_token_id=)`
  → `Rollout` (KV-cached batched sampling, responses cut after the first EOS, sampling log-probs).
- `make_experience(rollout, prompts, responses, policy=, ref_policy=, critic=, scorer=, ...)`
  → `Experience` (old/ref log-probs, old values, scores): the scoring pass of PPO.
- Scorers (`Scorer` protocol): `RewardModelScorer` (same tokenizer, reuses ids),
  `RetokenizingRewardModelScorer` (own tokenizer), `CallableScorer` (any Python function).
- `sample_batches`: sampled replies as text, batch by batch (evaluation, feedback collection).
- `response_logprobs`: the policy forward that applies the LM head only at response positions.
"""

from rlhfkit.rollout.experience import Experience, make_experience, reference_context
from rlhfkit.rollout.forward import (
    causal_lm_parts,
    response_logprobs,
    trim_padding,
)
from rlhfkit.rollout.generate import Rollout, RolloutConfig, generate
from rlhfkit.rollout.scorers import (
    CallableScorer,
    RetokenizingRewardModelScorer,
    RewardModelScorer,
    Scorer,
    as_scalar_model,
    import_callable,
)
from rlhfkit.rollout.texts import sample_batches

__all__ = [
    "CallableScorer",
    "Experience",
    "RetokenizingRewardModelScorer",
    "RewardModelScorer",
    "Rollout",
    "RolloutConfig",
    "Scorer",
    "as_scalar_model",
    "causal_lm_parts",
    "generate",
    "import_callable",
    "make_experience",
    "reference_context",
    "response_logprobs",
    "sample_batches",
    "trim_padding",
]
