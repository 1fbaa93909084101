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
   by mask, values at every token); this module only handles the causal LM side.
6. Rows that share a prompt (GRPO's and RLOO's G samples of one prompt) share its forward:
   causal attention makes a prompt's hidden states, keys and values the same in each of its
   rows, so `response_logprobs` runs each distinct prompt once with a KV cache and each row's
   response columns after it (`shared_prompt_hidden`), for the policy's training forward and
   the reference's and old policy's alike; gradients from all rows of a prompt meet in its one
   forward. Equal to the full forward to float rounding (values and gradients, tested; GPT-2
   and Llama). On the anchor GRPO batch (16 prompts × 4 samples, 32-column prompts and
   responses) the policy's forward + backward took 0.55-0.57 CPU s instead of 0.71-0.74 (one
   thread). Off (the full forward) where it would not be the same computation: no shared
   prompt, gradient checkpointing (transformers drops the cache), live dropout, compiled blocks.
   vLLM's prefix caching does the same for sampling; `generate` shares the prefill likewise.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import DynamicCache

from rlhfkit.core import HeadLogprobs, entropy_from_logits, gather_logprobs, head_logprobs
from rlhfkit.engine import wrapped_forward
from rlhfkit.engine.compile import is_compiled
from rlhfkit.models import checkpointed_layers, final_hidden_at, position_ids_from_mask

__all__ = [
    "cache_kwarg",
    "causal_lm_parts",
    "distinct_prompts",
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


def distinct_prompts(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, inverse): `first` (U,) the first row of each distinct prompt, in row order, and
    `inverse` (B,) the position in `first` of each row's prompt, so rows[first][inverse] equals
    rows. Two rows hold the same prompt when their masks and their ids under the mask agree
    (what sits under the padding does not matter). GRPO's and RLOO's G samples of one prompt
    share one prompt forward this way (`generate`, `response_logprobs`)."""
    batch = prompt_ids.shape[0]
    key = prompt_ids.masked_fill(~prompt_mask.bool(), -1)
    _, labels = torch.unique(key, dim=0, return_inverse=True)
    rows = torch.arange(batch, device=prompt_ids.device)
    firsts = torch.full((batch,), batch, device=prompt_ids.device).scatter_reduce(
        0, labels, rows, reduce="amin"
    )
    first = firsts[firsts < batch].sort().values
    position = torch.empty(batch, dtype=torch.long, device=prompt_ids.device)
    position[first] = torch.arange(first.shape[0], device=prompt_ids.device)
    return first, position[firsts[labels]]


def cache_kwarg(backbone: nn.Module) -> str:
    """The name the backbone's forward takes its KV cache by: transformers 5.x renames
    `past_key_values` to `cache` (the old name warns, and is removed in 5.40); earlier 5.x
    releases know only `past_key_values`."""
    params = inspect.signature(backbone.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


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
    (B, R, H), with each distinct prompt run once (point 6 of the module docstring); None when
    no two rows share a prompt or the model cannot share (`_can_share_prompts`).

    Two passes of the body: the distinct prompts (U rows, P columns) with a KV cache, whose
    keys and values, copied to every row of their prompt, serve as the past of the second pass
    over each row's response columns P … T − 2. Gradients flow through the copies back into the
    prompt pass, so each prompt's activations get the sum of its rows' gradients, as in the
    full forward."""
    batch, total = input_ids.shape
    if prompt_len < 1 or total <= prompt_len or not _can_share_prompts(backbone):
        return None
    mask = attention_mask.long()
    first, inverse = distinct_prompts(input_ids[:, :prompt_len], mask[:, :prompt_len])
    if first.shape[0] == batch:
        return None
    cache = DynamicCache()
    key = cache_kwarg(backbone)
    prompts = backbone(
        input_ids=input_ids[first, :prompt_len],
        attention_mask=mask[first, :prompt_len],
        position_ids=position_ids[first, :prompt_len],
        use_cache=True,
        **{key: cache},
    ).last_hidden_state
    last = prompts[inverse, -1:]  # column P − 1: predicts the first response token
    if total == prompt_len + 1:
        return last
    cache.batch_select_indices(inverse)
    responses = backbone(
        input_ids=input_ids[:, prompt_len:-1],
        attention_mask=mask[:, :-1],
        position_ids=position_ids[:, prompt_len:-1],
        use_cache=True,
        **{key: cache},
    ).last_hidden_state
    return torch.cat([last, responses], dim=1)


def _can_share_prompts(backbone: nn.Module) -> bool:
    """Whether running a prompt once for all its rows computes what the full forward would:
    not under gradient checkpointing (transformers drops the cache there), not with active
    dropout (the rows would share one dropout mask over the prompt) and not with compiled
    blocks (a block called with a cache runs eager: `engine.compile`, point 2)."""
    if checkpointed_layers(backbone) or is_compiled(backbone):
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
