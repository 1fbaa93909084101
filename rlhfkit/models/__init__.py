"""rlhfkit.models: loading the policy / reference (causal LMs) and the reward model / critic.

- `ModelConfig` (+ `LoraSettings`): what to load and how (dtype, LoRA, gradient checkpointing).
- `load_tokenizer(name_or_path)`: a tokenizer with a pad token guaranteed (pad = EOS if missing).
- `load_policy(cfg)`: a causal LM (a `peft.PeftModel` under LoRA).
- `enable_gradient_checkpointing(model)`, `checkpointed_layers(model)`: activation
  checkpointing that is on in training and eval mode alike (dropout follows the mode).
- `check_source(name, key)`, `check_fits(cfg, max_length)`: a missing folder, an unreachable hub
  name or a too-short position table as one clear error, before anything loads.
- `ScalarModel`: body + scalar head; `values(ids, mask)` (B, T) and `score(ids, mask)` (B,) at the
  last real token, float32, score normalisation applied; `save(dir, tokenizer)`.
- `final_hidden_at(body, ...)`: final hidden states at chosen columns, the last block computed
  there only (GPT-2; other bodies run in full).
- `build_scalar_model(cfg)` (trainable, from a causal LM or a reward model),
  `load_reward_model(path)` (frozen), `load_critic(path_or_cfg)` (trainable, from the RM).
- `save_policy(model, tokenizer, dir)`: a plain HF folder (LoRA merged into a copy).
- `block_mask(allowed, attn_implementation, dtype)`: a packed row's (B, T, T) mask as the
  attention kernel takes it.
"""

from rlhfkit.models.attention import block_mask
from rlhfkit.models.config import LoraSettings, ModelConfig
from rlhfkit.models.loading import (
    apply_lora,
    check_fits,
    check_source,
    checkpointed_layers,
    enable_gradient_checkpointing,
    load_policy,
    load_tokenizer,
    resolve_dtype,
)
from rlhfkit.models.partial import final_hidden_at
from rlhfkit.models.prompt_sharing import (
    cache_kwarg,
    distinct_prompts,
    hidden_after_shared_prompts,
)
from rlhfkit.models.saving import save_policy
from rlhfkit.models.scalar import (
    SCORE_OFFSET_KEY,
    SCORE_SCALE_KEY,
    ScalarModel,
    ScalarOutput,
    build_scalar_model,
    load_critic,
    load_reward_model,
    position_ids_from_mask,
)

__all__ = [
    "SCORE_OFFSET_KEY",
    "SCORE_SCALE_KEY",
    "LoraSettings",
    "ModelConfig",
    "ScalarModel",
    "ScalarOutput",
    "apply_lora",
    "block_mask",
    "build_scalar_model",
    "cache_kwarg",
    "check_fits",
    "check_source",
    "checkpointed_layers",
    "distinct_prompts",
    "enable_gradient_checkpointing",
    "final_hidden_at",
    "hidden_after_shared_prompts",
    "load_critic",
    "load_policy",
    "load_reward_model",
    "load_tokenizer",
    "position_ids_from_mask",
    "resolve_dtype",
    "save_policy",
]
