"""Forward passes over (prompt | response) sequences that compute only what PPO needs.

Layout used everywhere in rollout and PPO: `input_ids = cat(prompt_ids, response_ids)` with the
prompt left-padded to P columns and the response right-padded to R columns, `attention_mask` the
matching True = valid mask. Response token t (column P + t) is predicted from the hidden state at
column P + t − 1; its value V_t is read from the critic at the same column (the state in which the
action is taken, as TRL `PPOTrainer` does with `values[:, context_length - 1 : -1]`).

Implementation details and their sources:

1. Position ids come from the mask (cumsum − 1), so a left-padded prompt starts at position 0
   exactly as an unpadded one does (HF `generate` does the same in
   `prepare_inputs_for_generation`); without it GPT-2 would give different logits per padding.
2. The vocabulary projection is applied only at the R response positions: hidden states are
   sliced *before* the LM head (for the tiny GPT-2 of the benchmark the head is ~25 % of the
   forward FLOPs, and prompt columns are ~half of the sequence). `logits_to_keep` in HF does the
   same for the last positions only. The last transformer block, too, runs at those columns
   only (`models.final_hidden_at`; the critic's `values(..., columns=...)` likewise).
3. Log-probs and entropy come from one forward (`response_logprobs(..., with_entropy=True)`),
   in float32, straight from the hidden states (`lm_head_logprobs` → `rlhfkit.core.head_logprobs`:
   chunked over tokens, so the (tokens × vocabulary) logits never exist at once, forward or
   backward); logits are divided by the sampling temperature first, the same scaling the sampler
   used (TRL `PPOTrainer` and OpenRLHF divide by the temperature in both places). DPO's sequence
   log-probs, the SFT loss and PPO-ptx go through `lm_head_logprobs` too.
4. GPT-2's tanh GELU runs as one fused kernel: `models.loading` loads `gelu_new` configs as
   `gelu_pytorch_tanh` (the same function).
5. Reward models and critics are `rlhfkit.models.ScalarModel`s (score at the last valid token
   by mask, values at every token); this module only handles the causal LM side (and says
   when prompts may be shared, `can_share_prompts`, for the reward model's scorer too).
6. Rows that share a prompt (GRPO's and RLOO's G samples of one prompt) share its forward:
   causal attention makes a prompt's hidden states, keys and values the same in each of its
   rows, so `response_logprobs` runs each distinct prompt once with a KV cache and each row's
   response columns after it (`models.hidden_after_shared_prompts`), for the policy's training
   forward and the reference's and old policy's alike (and `RewardModelScorer` for the reward
   model's scores); gradients from all rows of a prompt meet in its one forward. Equal to the
   full forward to float rounding (values and gradients, tested; GPT-2 and Llama). On the
   anchor GRPO batch (16 prompts × 4 samples) the policy's forward + backward took 0.584 CPU s
   instead of 0.744 (one thread, commit 40d37bd, `python -m benchmarks.generate_cost`). Off
   (the full forward) where it would not be the same computation: no shared prompt, gradient
   checkpointing (transformers drops the cache), live dropout. vLLM's prefix caching does the
   same for sampling; `generate` shares the prefill likewise.
"""

from __future__ import annotations

import torch
from torch import nn

from rlhfkit.core import HeadLogprobs, entropy_from_logits, gather_logprobs, head_logprobs
from rlhfkit.engine import wrapped_forward
from rlhfkit.models import (
    checkpointed_layers,
    final_hidden_at,
    hidden_after_shared_prompts,
    position_ids_from_mask,
)

__all__ = [
    "can_share_prompts",
    "causal_lm_parts",
    "lm_head_logprobs",
    "next_token_logprobs",
    "response_logprobs",
    "trim_padding",
]


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft `PeftModel` (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, lm_head) of a transformers causal LM (or a peft model wrapping one).

    The backbone returns the final-normed hidden states (GPT-2 `transformer`, Llama `model`,
    found through `base_model`); the head maps them to logits. Models whose logits are not
    `lm_head(hidden)` (e.g. with logit soft-capping) are rejected rather than silently wrong.
    """
    hf = _unwrap(model)
    backbone = getattr(hf, "base_model", None)
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if backbone is None or backbone is hf or head is None:
        raise TypeError(
            f"{type(hf).__name__} is not a transformers causal LM with a backbone and an "
            "output-embedding head"
        )
    if getattr(hf.config, "final_logit_softcapping", None):
        raise TypeError(
            f"{type(hf).__name__} soft-caps its logits; response_logprobs cannot slice it"
        )
    return backbone, head


def trim_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop prompt columns that are padding in every row (left) and response columns likewise
    (right), so no forward pass computes a column that no row needs. Returns the trimmed ids,
    mask and the new prompt length."""
    valid_cols = attention_mask.bool().any(dim=0)
    first = (
        int(valid_cols[:prompt_len].long().argmax()) if bool(valid_cols[:prompt_len].any()) else 0
    )
    resp = valid_cols[prompt_len:]
    last = prompt_len + (int(resp.nonzero().max()) + 1 if bool(resp.any()) else 0)
    # keep at least one response column so shapes stay (B, R >= 1)
    last = max(last, prompt_len + 1) if input_ids.shape[1] > prompt_len else last
    return input_ids[:, first:last], attention_mask[:, first:last], prompt_len - first


def response_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and optionally entropies) of the response tokens under `model`.

    logprobs[b, t] = log softmax(lm_head(h[b, P+t−1]) / temperature)[input_ids[b, P+t]], for the
    R = T − P response columns; entropy[b, t] = H(softmax(lm_head(h[b, P+t−1]) / temperature)).
    Shapes: `input_ids`, `attention_mask` (B, T = P + R), True = valid → (B, R) float32 each.
    Padding positions get finite meaningless values; mask them downstream. Gradients flow when
    called outside `torch.no_grad()`, through `model`'s distributed wrapper if it has one
    (`engine.wrapped_forward`: DDP synchronises only gradients of forwards it ran).
    """
    return wrapped_forward(
        model, _response_logprobs, input_ids, attention_mask, prompt_len, temperature, with_entropy
    )


def _response_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    temperature: float,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    backbone, head = causal_lm_parts(model)
    positions = position_ids_from_mask(attention_mask)
    hidden = shared_prompt_hidden(backbone, input_ids, attention_mask, positions, prompt_len)
    if hidden is None:
        columns = torch.arange(prompt_len - 1, input_ids.shape[1] - 1, device=input_ids.device)
        hidden = final_hidden_at(
            backbone, input_ids, attention_mask, positions, columns.expand(input_ids.shape[0], -1)
        )
    return lm_head_logprobs(head, hidden, input_ids[:, prompt_len:], temperature, with_entropy)


def shared_prompt_hidden(
    backbone: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    prompt_len: int,
) -> torch.Tensor | None:
    """Final hidden states at columns P − 1 … T − 2 (those that predict the response tokens),
    (B, R, H), with each distinct prompt run once (point 6 of the module docstring,
    `models.hidden_after_shared_prompts`); None when no two rows share a prompt or sharing
    would not compute what the full forward does (`can_share_prompts`)."""
    if not can_share_prompts(backbone):
        return None
    return hidden_after_shared_prompts(
        backbone, input_ids, attention_mask, position_ids, prompt_len
    )


def can_share_prompts(backbone: nn.Module) -> bool:
    """Whether running a prompt once for all its rows computes what the full forward would:
    not under gradient checkpointing (transformers drops the cache there) and not with active
    dropout (the rows would share one dropout mask over the prompt). Compiled blocks share too:
    called with a cache they run eager (`engine.compile`, point 2), which removes work where
    compiling the blocks did not speed GRPO up (docs/scaling.md)."""
    if checkpointed_layers(backbone):
        return False
    if any(isinstance(m, nn.Dropout) and m.training and m.p > 0 for m in backbone.modules()):
        return False
    config = getattr(backbone, "config", None)
    return not (backbone.training and getattr(config, "attention_dropout", 0.0))


def next_token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(input_ids[:, t + 1] | input_ids[:, ≤ t]) for t < T − 1: the teacher-forced log-probs
    of a whole sequence (SFT and PPO-ptx losses), without the (B, T, V) logits.

    Shapes: `input_ids` (B, T); `attention_mask` (B, T) True = valid, or the (B, 1, T, T) additive
    mask the body takes (packing); `position_ids` (B, T) or None (the model's default) →
    (B, T − 1) float32. Through `model`'s distributed wrapper like `response_logprobs`. A model
    whose logits are not `lm_head(hidden)` (`causal_lm_parts` rejects it) is run whole.
    """
    return wrapped_forward(model, _next_token_logprobs, input_ids, attention_mask, position_ids)


def _next_token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None,
) -> torch.Tensor:
    try:
        backbone, head = causal_lm_parts(model)
    except TypeError:  # logits that are not head(hidden) (soft-capping): the model's own
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).logits
        return gather_logprobs(logits[:, :-1], input_ids[:, 1:])
    hidden = final_hidden_at(backbone, input_ids, attention_mask, position_ids)
    return lm_head_logprobs(head, hidden[:, :-1], input_ids[:, 1:]).logprobs


def lm_head_logprobs(
    head: nn.Module,
    hidden: torch.Tensor,
    ids: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> HeadLogprobs:
    """log softmax(head(hidden) / τ)[ids] (and the entropy) in float32, without the full logits.

    Shapes: `hidden` (..., H), aligned with `ids` (...) → (...) each. A plain `nn.Linear` head
    (GPT-2, Llama, tied or not) goes through `core.head_logprobs`, chunked over tokens; any other
    head (e.g. LoRA adapters on the head itself) is applied whole, then `core.gather_logprobs`.
    """
    if type(head) is nn.Linear:
        return head_logprobs(
            hidden,
            head.weight,
            head.bias,
            ids,
            temperature=temperature,
            with_entropy=with_entropy,
        )
    logits = head(hidden)
    if temperature != 1.0:
        logits = logits.float() / temperature
    entropy = entropy_from_logits(logits) if with_entropy else None
    return HeadLogprobs(gather_logprobs(logits, ids), entropy)
