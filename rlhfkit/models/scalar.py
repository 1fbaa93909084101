"""`ScalarModel`: a transformer body with a linear scalar head — the reward model and the critic.

One object type serves both roles: `values(input_ids, attention_mask)` reads the head at every
token (the critic), `score(...)` at the last real token of each row (the reward model).

Implementation details and their sources:

1. The model *is* a `transformers` `AutoModelForSequenceClassification(num_labels=1)` (GPT-2,
   Llama, Qwen2, Mistral, Gemma… all name the head `score`), so a saved folder loads with that
   class too. But the head is applied here, not in HF's `forward`: HF reads the rightmost token
   whose id differs from `config.pad_token_id`, which is wrong when pad = EOS (`load_tokenizer`
   falls back to EOS; SmolLM2-Instruct ships pad = EOS = `<|im_end|>`) and a reply ends in its
   end token: HF then reads the token *before* it, with left and right padding alike. Here the
   last real token comes from the attention mask (`core.last_valid_index`), which is right
   under left padding, right padding and pad = EOS.
2. Position ids are computed from the mask (cumsum − 1), so a left-padded row sees the same
   positions as the same row right-padded, and scores do not depend on the padding side
   (HF's generation code does the same for left-padded prompts).
3. The head runs in float32 even when the body runs in bf16 or under autocast: scores feed a
   sigmoid loss and PPO rewards, where bf16's 3 significant digits are visible.
4. Score normalisation (Stiennon et al. 2020 §3.4: the RM is shifted so reference summaries score
   0 on average): score = scale·(raw − offset), applied to `values` and `score` alike so the
   score equals the value at the last real token.
7. A saved folder gives plain `AutoModelForSequenceClassification` the scores of
   `load_reward_model` (tested on GPT-2 and on stories260K, a Llama). `save` (a) folds the
   normalisation into the weights: the head's weight times scale, then the offset into the
   head's bias when it has one, else into the bias of the final LayerNorm (GPT-2: the head reads
   ln_f's output, so adding δ = −offset·w/|w|² to its bias adds exactly −offset to every score
   and value); (b) writes a pad token that can never end a scored row: the tokenizer's pad if
   it is not an end token (EOS, the chat end-of-turn token), else UNK, else BOS, else a new
   `<|rlhfkit_pad|>` token (one embedding row added to the saved copy); `config.pad_token_id`
   and the saved tokenizer agree, so HF's "rightmost non-pad token" is the last real token.
   The saved tokenizer pads on the right: HF's GPT-2 classes number positions from the first
   column, pads included, so a left-padded row would see shifted positions there (rotary
   models such as Llama score left- and right-padded rows alike).
   Architectures whose head reads an RMSNorm without bias through a bias-free head (Llama,
   Qwen2, Mistral, SmolLM2) cannot hold an additive constant in weights HF loads: their offset
   stays in config.json (`rlhfkit_score_offset`, applied by `load_reward_model`), and HF's class
   gives score + offset — the same rankings and pair probabilities σ(r_w − r_l), shifted by a
   constant that config.json records. The live model is never changed (a copy is saved).
5. The language-model head for the MOSS-RLHF imitation term (Zheng et al. 2023, "Secrets of RLHF
   Part I" §4.1: β_rm · NLL of the chosen reply) reads the same body. With tied embeddings
   (GPT-2, stories260K) it *is* the body's input embedding matrix; untied models get their own
   `lm_head` copied from the causal LM. It is training-only and is not written by `save`.
6. LoRA (peft, task SEQ_CLS): the head is trained in full (`modules_to_save`); `save` merges the
   adapters into a copy so the folder is a plain HF model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedModel

from rlhfkit.core import gather_logprobs, head_logprobs, last_valid_index
from rlhfkit.models.activations import use_fast_gelu
from rlhfkit.models.attention import block_mask, use_fp32_cpu_attention
from rlhfkit.models.config import ModelConfig
from rlhfkit.models.loading import (
    _from_hub_or_folder,
    _from_pretrained_kwargs,
    apply_lora,
    enable_gradient_checkpointing,
    resolve_dtype,
)
from rlhfkit.models.partial import final_hidden_at
from rlhfkit.models.prompt_sharing import hidden_after_shared_prompts

__all__ = [
    "SCORE_OFFSET_KEY",
    "SCORE_SCALE_KEY",
    "ScalarModel",
    "ScalarOutput",
    "build_scalar_model",
    "load_critic",
    "load_reward_model",
    "position_ids_from_mask",
]

SCORE_OFFSET_KEY = "rlhfkit_score_offset"
SCORE_SCALE_KEY = "rlhfkit_score_scale"
HEAD_NAME = "score"  # the scalar head's attribute in every *ForSequenceClassification of a decoder


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only: cumsum(mask) − 1, clamped at 0 on left pads."""
    mask = attention_mask.long()
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


class ScalarOutput(NamedTuple):
    scores: torch.Tensor  # (B,) float32, the (normalised) head at the last real token
    values: torch.Tensor | None  # (B, T) float32 per-token (normalised) head, when asked for
    hidden: torch.Tensor | None  # (B, T, H) last hidden states (model dtype), when asked for


class ScalarModel(nn.Module):
    """A reward model / critic. Tensors in, float32 tensors out; masks True = real token."""

    def __init__(self, model: nn.Module, score_offset: float = 0.0, score_scale: float = 1.0):
        super().__init__()
        self.model = model  # a *ForSequenceClassification, or a peft.PeftModel wrapping one
        self.score_offset = float(score_offset)
        self.score_scale = float(score_scale)
        self.lm_head: nn.Linear | None = None  # untied LM head for the imitation term
        self._tied_lm_head = False
        if not isinstance(getattr(self._inner, HEAD_NAME, None), nn.Module):
            raise ValueError(
                f"{type(self._inner).__name__} has no `{HEAD_NAME}` head; rlhfkit reward models "
                "need a decoder architecture whose sequence-classification class names its head "
                f"`{HEAD_NAME}` (GPT-2, Llama, Qwen2, Mistral, Gemma, Phi, ...)"
            )

    # -- parts ---------------------------------------------------------------------------------
    @property
    def _inner(self) -> PreTrainedModel:
        """The transformers model (under the peft wrapper, when there is one)."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    @property
    def body(self) -> nn.Module:
        return self._inner.base_model

    @property
    def head(self) -> nn.Module:
        return getattr(self._inner, HEAD_NAME)

    @property
    def config(self) -> Any:
        return self._inner.config

    @property
    def is_lora(self) -> bool:
        return self.model is not self._inner

    # -- computation ---------------------------------------------------------------------------
    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids and mask → (B, T, H) final hidden states (after the final norm), or
        (B, Q, H) at the `query` (B, Q) columns only (`models.partial.final_hidden_at`).

        `attention_mask` is (B, T), True = real token (positions then come from it), or a
        (B, T, T) boolean "query i may attend to key j" mask with explicit `position_ids`
        (B, T), for packed rows (see `rlhfkit.data.shared_prompt`).
        """
        if attention_mask.dim() == 3:
            if position_ids is None:
                raise ValueError("a (B, T, T) attention mask needs explicit position_ids")
            mask = self._mask_4d(attention_mask)
        else:
            mask = attention_mask.long()
            if position_ids is None:
                position_ids = position_ids_from_mask(attention_mask)
        return final_hidden_at(self.body, input_ids, mask, position_ids, query)

    def _mask_4d(self, allowed: torch.Tensor) -> torch.Tensor:
        """(B, T, T) bool → the (B, 1, T, T) mask of this model's attention kernel."""
        return block_mask(allowed, self.config._attn_implementation, self._dtype())

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Normalised scalar head in float32: scale·(w·h + b − offset), shape (...)."""
        head = self.head
        if hasattr(head, "modules_to_save"):  # peft wrapper: the active adapter's trained copy
            head = head.modules_to_save[head.active_adapter]
        weight, bias = head.weight, getattr(head, "bias", None)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            raw = F.linear(
                hidden.float(), weight.float(), None if bias is None else bias.float()
            ).squeeze(-1)
        if self.score_offset == 0.0 and self.score_scale == 1.0:
            return raw
        return (raw - self.score_offset) * self.score_scale

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        score_index: torch.Tensor | None = None,
        return_values: bool = False,
        return_hidden: bool = False,
    ) -> ScalarOutput:
        """Scores (B,) at each row's last real token, or at `score_index` ((N, 2) pairs of
        (row, position), for packed rows: scores (N,)); optionally per-token values and hidden
        states. Masks and positions as in `hidden_states`. Scores alone need the last block
        at the scored tokens only (`hidden_states(query=...)`)."""
        n_rows = input_ids.shape[0]
        if score_index is None:
            last = last_valid_index(attention_mask)
            rows = torch.arange(n_rows, device=last.device)
        else:
            rows, last = score_index.to(input_ids.device).unbind(-1)
        query = None
        if not (return_values or return_hidden):
            query, pick = _score_query(rows, last, n_rows)
        hidden = self.hidden_states(input_ids, attention_mask, position_ids, query)
        if query is not None:
            scores = self._head(hidden.reshape(-1, hidden.shape[-1])[pick])
            return ScalarOutput(scores, None, None)
        scores = self._head(hidden[rows, last])
        values = self._head(hidden) if return_values else None
        return ScalarOutput(scores, values, hidden if return_hidden else None)

    def values(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, columns: slice | None = None
    ) -> torch.Tensor:
        """(B, T) float32 per-token values, or (B, len(columns)) at `columns` only (the last
        block then runs there only); positions where the mask is False hold garbage."""
        query = None
        if columns is not None:
            cols = torch.arange(input_ids.shape[1], device=input_ids.device)[columns]
            query = cols.expand(input_ids.shape[0], -1)
        return self._head(self.hidden_states(input_ids, attention_mask, query=query))

    def score(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int | None = None
    ) -> torch.Tensor:
        """(B,) float32 score of each row, read at its last real token (from `attention_mask`).

        `prompt_len`: the rows are (prompt | reply) with the prompt in the first P columns and a
        real token in every reply; rows that share a prompt then share its forward
        (`models.hidden_after_shared_prompts`; the caller has checked that sharing computes
        what the full forward would, `rollout.forward.can_share_prompts`)."""
        if prompt_len is not None and attention_mask.dim() == 2:
            last = last_valid_index(attention_mask) - prompt_len
            hidden = None
            if bool((last >= 0).all()):  # every row is scored on a reply column
                positions = position_ids_from_mask(attention_mask)
                hidden = hidden_after_shared_prompts(
                    self.body, input_ids, attention_mask, positions, prompt_len, own_columns=True
                )
            if hidden is not None:
                rows = torch.arange(input_ids.shape[0], device=last.device)
                return self._head(hidden[rows, last])
        return self.forward(input_ids, attention_mask).scores

    # -- the LM head for the imitation term ----------------------------------------------------
    def attach_lm_head(self, causal_lm_path: str | Path) -> None:
        """Give the body an LM head from the causal LM at `causal_lm_path` (MOSS-RLHF's RM LM
        term). Tied models reuse the body's input embeddings; others get a trainable copy."""
        cfg = self._inner.config
        if getattr(cfg, "tie_word_embeddings", False):
            self._tied_lm_head = True
            return
        lm = AutoModelForCausalLM.from_pretrained(str(causal_lm_path), dtype=self._dtype())
        source = lm.get_output_embeddings()
        head = nn.Linear(source.in_features, source.out_features, bias=source.bias is not None)
        head.load_state_dict(source.state_dict())
        self.lm_head = head.to(device=self._device(), dtype=self._dtype())

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) hidden states → (B, T, V) next-token logits of the attached LM head."""
        if self._tied_lm_head:
            return F.linear(hidden, self.body.get_input_embeddings().weight)
        if self.lm_head is None:
            raise RuntimeError("no LM head: call attach_lm_head(causal_lm_path) first")
        return self.lm_head(hidden)

    def lm_logprobs(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(B, T, H) hidden states and the (B, T) ids they predict → (B, T) float32 log-probs
        under the attached LM head, without the (tokens × vocabulary) logits: a plain linear or
        tied head goes through `core.head_logprobs` (chunked over tokens), any other head is
        applied whole."""
        if self._tied_lm_head:
            weight, bias = self.body.get_input_embeddings().weight, None
        elif self.lm_head is None:
            raise RuntimeError("no LM head: call attach_lm_head(causal_lm_path) first")
        elif type(self.lm_head) is nn.Linear:
            weight, bias = self.lm_head.weight, self.lm_head.bias
        else:
            return gather_logprobs(self.lm_head(hidden), ids)
        return head_logprobs(hidden, weight, bias, ids).logprobs

    # -- normalisation and saving --------------------------------------------------------------
    def set_normalization(self, offset: float, scale: float = 1.0) -> None:
        """From now on score = scale·(raw − offset); stored by `save`."""
        if not scale > 0:
            raise ValueError(f"score scale must be positive, got {scale}")
        self.score_offset = float(offset)
        self.score_scale = float(scale)

    def save(self, path: str | Path, tokenizer: Any = None) -> Path:
        """Write a Hugging Face folder (weights, config, tokenizer) that `load_reward_model` and
        plain `AutoModelForSequenceClassification` both score alike (module docstring, point 7).

        A copy is written (LoRA adapters merged into it, the normalisation folded into it); the
        live model and `tokenizer` are left as they are.
        """
        path = Path(path)
        if self.is_lora:
            model = copy.deepcopy(self.model).merge_and_unload()
        else:
            model = copy.deepcopy(self._inner)
        model.config.num_labels = 1
        remaining = _fold_normalization(model, self.score_offset, self.score_scale)
        setattr(model.config, SCORE_OFFSET_KEY, remaining)
        setattr(model.config, SCORE_SCALE_KEY, 1.0)
        if tokenizer is not None:
            tokenizer = _with_safe_pad(tokenizer, model)
            model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(str(path), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(path))
        return path

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


@torch.no_grad()
def _fold_normalization(model: PreTrainedModel, offset: float, scale: float) -> float:
    """Fold score = scale·(w·h + b − offset) into `model`'s weights (head weight ← scale·w; the
    offset into the head bias or the final LayerNorm's bias); return the offset that could not
    be folded (0.0, or scale·offset when the architecture has nowhere to hold it)."""
    head = getattr(model, HEAD_NAME)
    head.weight.mul_(scale)
    shift = scale * offset  # score = w'·h + scale·b − shift, with w' = scale·w
    if head.bias is not None:
        head.bias.mul_(scale).sub_(shift)
        return 0.0
    if shift == 0.0:
        return 0.0
    norm = _final_norm(model)
    w = head.weight.detach().float().reshape(-1)
    if norm is None or w.norm() == 0:
        return shift
    delta = -shift * w / w.dot(w)
    norm.bias.add_(delta.to(norm.bias.dtype))
    return 0.0


def _final_norm(model: PreTrainedModel) -> nn.LayerNorm | None:
    """The body's final LayerNorm when it has a bias (its output is what the head reads)."""
    body = model.base_model
    for name in ("ln_f", "norm", "final_layernorm", "final_layer_norm"):
        norm = getattr(body, name, None)
        if isinstance(norm, nn.LayerNorm) and norm.bias is not None:
            return norm
    return None


PAD_TOKEN = "<|rlhfkit_pad|>"


def _with_safe_pad(tokenizer: Any, model: PreTrainedModel) -> Any:
    """`tokenizer`, or a copy whose pad token never ends a scored row (module docstring,
    point 7); `model` gets an embedding row when a new pad token had to be added."""
    from rlhfkit.data import end_token_id

    ends = {end_token_id(tokenizer), tokenizer.eos_token_id}
    generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for ids in (model.config.eos_token_id, generation_eos):
        ends.update(ids if isinstance(ids, list) else [ids])
    tokenizer = copy.deepcopy(tokenizer)
    # HF's GPT-2 and other absolute-position classes number a left-padded row's tokens from the
    # first pad, so the saved tokenizer pads on the right, where positions are the same
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in ends:
        return tokenizer
    for name in ("unk_token", "bos_token"):
        token = getattr(tokenizer, name)
        if token is not None and tokenizer.convert_tokens_to_ids(token) not in ends:
            tokenizer.pad_token = token
            return tokenizer
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return tokenizer


def _score_query(
    rows: torch.Tensor, cols: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The scored (row, column) pairs as a (B, Q) column index (every row scored Q times)
    and, for each pair, its place in that index flattened; (None, None) when rows are scored
    unequally often (the full hidden states are then computed)."""
    counts = torch.bincount(rows, minlength=n_rows)
    if not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
        return None, None
    order = torch.argsort(rows, stable=True)
    pick = torch.empty_like(order)
    pick[order] = torch.arange(order.numel(), device=order.device)
    return cols[order].view(n_rows, -1), pick


def _load_seq_cls(cfg: ModelConfig) -> PreTrainedModel:
    model = _from_hub_or_folder(
        AutoModelForSequenceClassification.from_pretrained,
        cfg.name_or_path,
        "model.name_or_path",
        "model",
        **_from_pretrained_kwargs(cfg, num_labels=1),
    )
    use_fp32_cpu_attention(model)  # "sdpa" stays float32 on CPU under bf16 (models.attention)
    use_fast_gelu(model)  # tanh GELU in cache-sized pieces on CPU (models.activations)
    # HF's own forward refuses batches without a pad id; ours never uses it, but a folder saved
    # from this model should load and run with the HF class as well.
    if model.config.pad_token_id is None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model


def build_scalar_model(cfg: ModelConfig) -> ScalarModel:
    """A trainable `ScalarModel` from any causal LM (new head) or a saved reward model.

    Used by the RM trainer (initialised from the SFT model) and for the PPO critic; honours
    `cfg.dtype`, `cfg.gradient_checkpointing` and `cfg.lora` (the head then trains in full).
    """
    model = _load_seq_cls(cfg)
    offset = float(getattr(model.config, SCORE_OFFSET_KEY, 0.0) or 0.0)
    scale = float(getattr(model.config, SCORE_SCALE_KEY, 1.0) or 1.0)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora, task_type="SEQ_CLS", head=HEAD_NAME)
    return ScalarModel(model, score_offset=offset, score_scale=scale)


def load_reward_model(
    path: str | Path, dtype: str | torch.dtype = "auto", device: str | torch.device | None = None
) -> ScalarModel:
    """A frozen reward model (eval mode, no grads) from a folder saved by `ScalarModel.save`,
    with its stored score offset/scale applied."""
    dtype_name = dtype if isinstance(dtype, str) else "auto"
    model = build_scalar_model(ModelConfig(name_or_path=str(path), dtype=dtype_name))
    if isinstance(dtype, torch.dtype):
        model.to(resolve_dtype(dtype))
    if device is not None:
        model.to(device)
    model.eval().requires_grad_(False)
    return model


def load_critic(source: str | Path | ModelConfig) -> ScalarModel:
    """A trainable critic: the reward model's body and head (MOSS-RLHF PPO-Max initialises the
    critic from the RM) or any causal LM with a new head. Pass a `ModelConfig` for LoRA,
    checkpointing or a dtype; the stored score normalisation is kept, so the critic's first
    value at the last token equals the RM's score."""
    cfg = source if isinstance(source, ModelConfig) else ModelConfig(name_or_path=str(source))
    return build_scalar_model(cfg).train()
